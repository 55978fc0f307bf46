"""Prose extraction for the embedded corpus (standard library only).

Also a script: ``python _extract.py`` reads a JSON list of file paths on stdin and writes a JSON
list with the prose paragraphs of each file on stdout. ``corpus.py`` runs several of these at
once; running the file by path (not ``-m``, not ``multiprocessing``) imports nothing from the
project and never re-runs the caller's ``__main__``.
"""

from __future__ import annotations

import ast
import gc
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

MIN_PARAGRAPH_WORDS = 8

_DEFS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_NESTED = (*_DEFS, ast.If, ast.Try, ast.ExceptHandler, ast.With, ast.For, ast.While)

#: rst directives whose content is prose; the content of any other directive is skipped.
_PROSE_DIRECTIVES = {
    "note",
    "warning",
    "seealso",
    "tip",
    "important",
    "hint",
    "attention",
    "caution",
    "danger",
    "admonition",
    "deprecated",
}
#: A plain English word: lower case or capitalised (or a short acronym), maybe hyphenated, with
#: surrounding quotes or brackets and one trailing punctuation mark.
_WORD = re.compile(r"^[\"'(]*(?:[A-Za-z][a-z]*(?:[-'][a-z]+)*|[A-Z]{2,6}s?)[\"')]*[,.;:!?]?$")
_STATEMENT = re.compile(
    r"^(def |class |import |from \S+ import |return\b|raise |yield\b|assert |lambda\b|print\(|"
    r"(if|elif|for|while|with|except)\b.*:$|else:$|try:$|\$ |pip install )"
)
_CODE_CHARS = frozenset("=(){}[]<>_/\\|#@$%^&*+~`")
#: (a character the markup needs, its pattern, the replacement), applied in order.
_MARKUP = [
    ("`", re.compile(r"\[`~?(?:[\w.]*\.)?([^`\]]+)`\]"), r"\1"),  # [`~utils.ModelOutput`]
    ("]", re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # [text](url)
    ("`", re.compile(r":[a-z:]+:`~?(?:[\w.]*\.)?([^`]+)`"), r"\1"),  # :class:`~a.B`
    ("`", re.compile(r"`+([^`]*)`+"), r"\1"),  # ``code`` and `code`
    ("*", re.compile(r"(\*\*|\*)(\S[^*]*?)\1"), r"\2"),  # *emphasis*, **strong**
    ("://", re.compile(r"<?https?://\S+>?"), ""),  # URLs
    ("<", re.compile(r"</?[a-zA-Z][^>]*>"), ""),  # html tags
    ("#", re.compile(r"^#+\s+"), ""),  # markdown headings
]


def extract_file(path: str | Path) -> list[str]:
    """The prose paragraphs of one file: a ``.py`` file's docstrings, or a doc file's text."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError:
        return []
    if path.suffix != ".py":
        return prose_paragraphs(raw.decode("utf-8", errors="replace"))
    # A syntax tree holds no cycles to collect, but it is big enough to set the cyclic collector
    # off again and again: pausing it saves about a fifth of the time.
    enabled = gc.isenabled()
    gc.disable()
    try:
        tree = ast.parse(raw)
        return [p for doc in docstrings(tree) for p in prose_paragraphs(doc)]
    except (SyntaxError, ValueError):
        return []
    finally:
        if enabled:
            gc.enable()


def docstrings(tree: ast.AST) -> Iterator[str]:
    """Module, class and function docstrings in source order.

    Only statement bodies are visited (never expressions): that is most of the time saved over
    ``ast.walk``.
    """
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, _DEFS):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc
        children: list[ast.AST] = []
        for name in ("body", "orelse", "handlers", "finalbody"):
            children.extend(getattr(node, name, ()))
        stack.extend(c for c in reversed(children) if isinstance(c, _NESTED))


def _clean(line: str) -> str:
    for needs, pattern, repl in _MARKUP:
        if needs in line:
            line = pattern.sub(repl, line)
    return " ".join(line.split())


def is_prose(line: str) -> bool:
    """Whether a (cleaned) line reads as English prose rather than code or identifiers."""
    tokens = line.split()
    if len(tokens) < 3 or _STATEMENT.match(line):
        return False
    words = sum(1 for t in tokens if _WORD.match(t))
    symbols = sum(1 for c in line if c in _CODE_CHARS)
    return words >= 3 and words >= 0.7 * len(tokens) and symbols <= 0.05 * len(line)


def prose_paragraphs(text: str) -> list[str]:
    """The prose paragraphs of a docstring or doc file, code and markup removed.

    Skipped: fenced blocks, doctest blocks (``>>>`` up to the next blank line), rst literal blocks
    (the lines indented under a line ending in ``::``), the content of non-prose rst directives,
    and lines that are not prose (:func:`is_prose`), which also end the paragraph. Paragraphs of
    fewer than ``MIN_PARAGRAPH_WORDS`` words are dropped.
    """
    paragraphs: list[str] = []
    current: list[str] = []

    def flush() -> None:
        if current:
            paragraph = " ".join(current)
            if len(paragraph.split()) >= MIN_PARAGRAPH_WORDS:
                paragraphs.append(paragraph)
            current.clear()

    fence = False  # inside ``` ... ```
    doctest = False  # inside a >>> block (until a blank line)
    literal: int | None = None  # inside a literal block indented deeper than this
    for line in text.expandtabs(4).splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if stripped.startswith(("```", "~~~")):
            fence = not fence
            flush()
            continue
        if fence:
            continue
        if doctest:
            doctest = bool(stripped)
            continue
        if literal is not None:
            if not stripped or indent > literal:
                continue
            literal = None
        if not stripped:
            flush()
            continue
        if stripped.startswith((">>>", "In [")):
            doctest = True
            flush()
            continue
        if stripped.startswith(".. "):
            flush()
            name, _, rest = stripped[3:].partition("::")
            if name.strip() not in _PROSE_DIRECTIVES:
                literal = indent
            elif rest.strip():
                current.append(_clean(rest))
            continue
        if stripped.endswith("::"):
            literal = indent
            stripped = stripped[:-2].rstrip()
            stripped = stripped + ":" if stripped else ""
        cleaned = _clean(stripped)
        if cleaned and is_prose(cleaned):
            current.append(cleaned)
        else:
            flush()
    flush()
    return paragraphs


def main() -> None:
    paths = json.load(sys.stdin)
    json.dump([extract_file(p) for p in paths], sys.stdout)


if __name__ == "__main__":
    main()
