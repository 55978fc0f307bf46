"""MkDocs hook (``hooks:`` in mkdocs.yml): the parts of the site generated from the code.

A page asks for a generated part with a directive on a line of its own::

    <!-- gen: reference ablations.config.run:RunConfig -->   one table per dataclass, from the root
    <!-- gen: defaults ablations.config.run:RunConfig -->    the root's defaults, as YAML
    <!-- gen: knobs -->                                      lamb_variants' knobs
    <!-- gen: presets -->                                    lamb_variants' presets
    <!-- gen: model-sizes -->                                the run config's model sizes
    <!-- gen: make-targets -->                               the Makefile's documented targets
    <!-- gen: readme SECTION -->                             README.md's section whose heading
                                                             starts with SECTION (its body)

The reference tables read the dataclasses themselves (``dataclasses.fields``, the resolved
type hints, the defaults), each field's ``#:`` comment block or trailing ``#`` comment, and the
one-line ``check(condition, key, expected, value)`` calls of ``__post_init__`` (the Allowed
column), so a key cannot be added, removed or renamed without the reference following. An
unknown directive, a README section that is not there or a root that is not a dataclass fails
the build.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import io
import posixpath
import re
import tokenize
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

import lamb_variants
from ablations.config import MODEL_SIZES
from lamb_variants import knobs as K

REPO = Path(__file__).resolve().parents[2]
#: Where files of the repository that pages show (README's figures) are put in the site.
REPO_FILES = "repo"
DIRECTIVE = re.compile(r"^<!-- gen: (?P<name>[\w-]+)(?: (?P<arg>.*?))? -->$", re.M)
IMAGE = re.compile(r"(!\[[^\]]*\]\()([^)\s]+)(\))")
DOCS_LINK = re.compile(r"((?<!!)\[[^\]]*\]\()docs/([^)\s]+)(\))")
ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|exc|obj):`(~?)([^`]+)`")
LITERAL_MARK = re.compile(r"::(</p>)")
VARIABLE = re.compile(r"\$\((\w+)\)")
ROLE_HTML = re.compile(r":(?:func|class|mod|meth|attr|data|exc|obj):<code>(~?)([^<]+)</code>")


# --- the hooks ---------------------------------------------------------------------------------


def repo_images(markdown: str, src_uri: str) -> dict[str, str]:
    """A page's image links that leave ``docs/`` (the study pages show the figures committed
    beside their tables, ``../../reproduction/...``, links that also work on GitHub) -> the
    repository path each points at."""
    here = posixpath.join("docs", posixpath.dirname(src_uri))
    out = {}
    for m in IMAGE.finditer(markdown):
        path = posixpath.normpath(posixpath.join(here, m[2]))
        if "://" not in m[2] and not path.startswith("docs/") and (REPO / path).is_file():
            out[m[2]] = path
    return out


def on_files(files: Any, config: Any) -> Any:
    """Add the figures the pages (and the README sections they include) show to the site under
    ``repo/``: MkDocs copies nothing from outside ``docs/``."""
    paths = {m[2] for m in IMAGE.finditer(_readme()) if (REPO / m[2]).is_file()}
    for page in files.documentation_pages():
        paths |= set(repo_images(Path(page.abs_src_path).read_text(), page.src_uri).values())
    for path in sorted(paths):
        files.append(File.generated(config, f"{REPO_FILES}/{path}", abs_src_path=str(REPO / path)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    def expand(m: re.Match[str]) -> str:
        name, arg = m["name"], (m["arg"] or "").strip()
        if name not in GENERATORS:
            raise PluginError(f"{page.file.src_uri}: unknown directive 'gen: {name}'")
        return GENERATORS[name](arg, page)

    here = posixpath.dirname(page.file.src_uri) or "."
    images = repo_images(markdown, page.file.src_uri)

    def relink(m: re.Match[str]) -> str:
        if m[2] not in images:
            return m[0]
        return f"{m[1]}{posixpath.relpath(f'{REPO_FILES}/{images[m[2]]}', here)}{m[3]}"

    return DIRECTIVE.sub(expand, IMAGE.sub(relink, markdown))


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    """Docstrings' reST: roles (``:func:`create```) are shown as code, as the text reads."""
    html = ROLE_HTML.sub(lambda m: f"<code>{_target(m[1], m[2])}</code>", html)
    return LITERAL_MARK.sub(r":\1", html)  # reST's "text::" before a literal block reads "text:"


def _target(tilde: str, target: str) -> str:
    """A role's text as Sphinx shows it: ``~a.b.c`` as ``c``, ``a.b.c`` whole."""
    return target.rsplit(".", 1)[-1] if tilde else target


# --- dataclass reference -----------------------------------------------------------------------


def _load(spec: str) -> Any:
    module, _, name = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise PluginError(f"gen: cannot load {spec!r}: {e}") from None
    if not dataclasses.is_dataclass(obj):
        raise PluginError(f"gen: {spec!r} is not a dataclass")
    return obj


def anchor(cls: type) -> str:
    return cls.__name__.lower()


def keys(cls: type) -> list[dataclasses.Field]:
    """The fields a file or ``key=value`` may set (``init=False`` ones are derived)."""
    return [f for f in dataclasses.fields(cls) if f.init]


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(importlib.import_module(cls.__module__)))


def _nested(tp: Any) -> Iterator[type]:
    """The dataclasses in a type: ``X``, ``X | None``, ``tuple[X, ...]``, ``Mapping[str, X]``."""
    if dataclasses.is_dataclass(tp):
        yield tp
    for arg in typing.get_args(tp):
        yield from _nested(arg)


def walk(root: type) -> dict[type, list[str]]:
    """Every dataclass reachable from ``root``, in order, with the key paths it is found at."""
    found: dict[type, list[str]] = {root: [""]}
    todo = [(root, "")]
    while todo:
        cls, prefix = todo.pop(0)
        hints = _hints(cls)
        for f in keys(cls):
            tp = hints[f.name]
            for sub in _nested(tp):
                path = prefix + f.name + _suffix(tp)
                if sub not in found:
                    found[sub] = []
                    todo.append((sub, path + "."))
                if path not in found[sub]:
                    found[sub].append(path)
    return found


def _suffix(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return "[i]"
    if origin in (Mapping, dict):
        return ".<name>"
    return ""


def type_text(tp: Any) -> str:
    """A field's type in words, with links to the tables of nested dataclasses."""
    if dataclasses.is_dataclass(tp):
        return f"[`{tp.__name__}`](#{anchor(tp)})"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        kinds = {type(a) for a in args}
        return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(
            kinds.pop() if len(kinds) == 1 else object, "value"
        )
    if origin in (types.UnionType, typing.Union):
        rest = [a for a in args if a is not type(None)]
        text = " or ".join(type_text(a) for a in rest)
        if len(rest) == len(args):
            return text
        return f"{text}, or null" if " of " in text else f"{text} or null"
    if origin is tuple:
        item = args[0] if args else Any
        return f"list of {type_text(item)}"
    if origin in (Mapping, dict):
        return f"mapping of {type_text(args[0])} to {type_text(args[1])}"
    names = {str: "string", int: "integer", float: "number", bool: "boolean", Any: "any"}
    return names.get(tp, f"`{getattr(tp, '__name__', tp)}`")


def _literals(tp: Any) -> list[Any]:
    if typing.get_origin(tp) is typing.Literal:
        return list(typing.get_args(tp))
    return [v for a in typing.get_args(tp) for v in _literals(a)]


def value_text(value: Any) -> str:
    """A value as YAML writes it, in code."""
    if dataclasses.is_dataclass(value):
        return f"[defaults](#{anchor(type(value))})"
    if isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
        return f"{len(value)} × [defaults](#{anchor(type(value[0]))})"
    if isinstance(value, Mapping):
        value = dict(value)
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return f"`{text.removesuffix('...').strip()}`"


def default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return value_text(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return value_text(f.default_factory())
    return "**required**"


def markdown_text(text: str) -> str:
    """Docstring and comment text (reST code and roles) as Markdown."""
    text = ROLE.sub(lambda m: f"``{_target(m[1], m[2])}``", text)
    return re.sub(r"``(.+?)``", r"`\1`", text)


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|") or "–"


class Source:
    """A module's source: each class field's comment and each ``check`` of ``__post_init__``."""

    def __init__(self, module: types.ModuleType) -> None:
        self.module = module
        text = inspect.getsource(module)
        self.lines = text.splitlines()
        self.tree = ast.parse(text)
        self.comments: dict[int, str] = {}
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                self.comments[tok.start[0]] = tok.string

    def classdef(self, name: str) -> ast.ClassDef:
        for node in self.tree.body:
            if isinstance(node, ast.ClassDef) and node.name == name:
                return node
        raise PluginError(f"gen: no class {name} in {self.module.__name__}")

    def field_docs(self, cls: type) -> dict[str, str]:
        """Each field's ``#:`` comment block above it, else its trailing comment."""
        docs = {}
        for node in self.classdef(cls.__name__).body:
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            block, line = [], node.lineno - 1
            while line >= 1 and self.lines[line - 1].strip().startswith("#"):
                block.insert(0, self.lines[line - 1].strip())
                line -= 1
            if any(b.startswith("#:") for b in block):
                docs[node.target.id] = " ".join(b.lstrip("#:").strip() for b in block)
            elif node.end_lineno in self.comments:
                docs[node.target.id] = self.comments[node.end_lineno].lstrip("#").strip()
        return docs

    def checks(self, cls: type) -> dict[str, list[str]]:
        """What each field's ``check(...)`` calls in ``__post_init__`` expect, in words."""
        found: dict[str, list[str]] = {}
        names = {f.name for f in keys(cls)}
        for node in self.classdef(cls.__name__).body:
            if isinstance(node, ast.FunctionDef) and node.name == "__post_init__":
                self._visit(node.body, {}, names, found)
        return found

    def _visit(self, body: list[ast.stmt], env: dict[str, Any], names, found) -> None:
        for st in body:
            if isinstance(st, ast.For) and isinstance(st.target, ast.Name):
                elts = getattr(st.iter, "elts", None) or []
                values = [e.value for e in elts if isinstance(e, ast.Constant)]
                if values and len(values) == len(elts):  # for name in ("a", "b"): check(...)
                    for v in values:
                        self._visit(st.body, {**env, st.target.id: v}, names, found)
                    continue
            call = st.value if isinstance(st, ast.Expr) else None
            if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "check":
                key, expected = self._text(call.args[1], env), self._text(call.args[2], env)
                field = re.sub(r"\[.*?\]", "", key or "").rsplit(".", 1)[-1]
                if field in names and expected:
                    found.setdefault(field, []).append(expected)
            for attr in ("body", "orelse", "finalbody"):
                self._visit(getattr(st, attr, []), env, names, found)
            for handler in getattr(st, "handlers", []):
                self._visit(handler.body, env, names, found)

    def _text(self, node: ast.expr, env: dict[str, Any]) -> str | None:
        """A string argument: a constant, a name bound by a loop, or an f-string whose parts
        are evaluated at module level; a part that cannot be (``self.x``, a local) is left out
        with the ``=`` before it (``time={limit}`` reads ``time``)."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name) and node.id in env:
            return str(env[node.id])
        if not isinstance(node, ast.JoinedStr):
            return None
        out = ""
        for part in node.values:
            if isinstance(part, ast.Constant):
                out += str(part.value)
                continue
            expr = part.value
            if isinstance(expr, ast.Name) and expr.id in env:
                out += str(env[expr.id])
                continue
            try:
                code = compile(ast.Expression(expr), "<check>", "eval")
                out += str(eval(code, vars(self.module), {}))  # the module's own constants
            except Exception:
                out = re.sub(r"\s*=\s*$", "", out)
        return out


def reference(arg: str, page: Any) -> str:
    """One section per dataclass reachable from the root: where it sits, its docstring, and a
    table of its keys (type, default, allowed values, description)."""
    root = _load(arg)
    sources: dict[str, Source] = {}
    out = []
    for cls, paths in walk(root).items():
        module = importlib.import_module(cls.__module__)
        src = sources.setdefault(cls.__module__, Source(module))
        docs, checks, hints = src.field_docs(cls), src.checks(cls), _hints(cls)
        where = ", ".join(f"`{p}`" for p in paths if p) or "the top level of the file"
        title = next((p for p in paths if p), "") or "top level"
        out.append(f"## `{title}` {{#{anchor(cls)}}}\n")
        out.append(f"`{cls.__module__}.{cls.__name__}` · at {where}\n")
        doc = inspect.getdoc(cls) or ""
        if doc and not doc.startswith(f"{cls.__name__}("):  # not the dataclass' generated one
            out.append(markdown_text(doc) + "\n")
        out.append("| Key | Type | Default | Allowed | Description |")
        out.append("|---|---|---|---|---|")
        for f in keys(cls):
            tp = hints[f.name]
            allowed = [", ".join(value_text(v) for v in _literals(tp))] if _literals(tp) else []
            allowed += checks.get(f.name, [])
            row = [
                f"`{f.name}`",
                type_text(tp),
                default_text(f),
                "; ".join(allowed),
                markdown_text(docs.get(f.name, "")),
            ]
            out.append("| " + " | ".join(cell(c) for c in row) + " |")
        out.append("")
    return "\n".join(out)


def defaults(arg: str, page: Any) -> str:
    """The root dataclass with every default, as the YAML a file would hold."""
    cls = _load(arg)
    data = cls().to_dict() if hasattr(cls, "to_dict") else dataclasses.asdict(cls())
    return "```yaml\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True) + "```\n"


# --- lamb_variants -----------------------------------------------------------------------------


def knob_table(arg: str, page: Any) -> str:
    """The knobs as ``python -m lamb_variants list`` prints them (Python values)."""
    rows = ["| Knob | Default | Allowed |", "|---|---|---|"]
    for name in K.KNOB_NAMES:
        rows.append(f"| `{name}` | `{cell(repr(K.DEFAULTS[name]))}` | {cell(K.allowed(name))} |")
    return "\n".join(rows) + "\n"


def preset_table(arg: str, page: Any) -> str:
    rows = ["| Preset | Reproduces | Knobs it sets (over the defaults) | Notes |"]
    rows.append("|---|---|---|---|")
    for name, p in lamb_variants.PRESETS.items():
        knobs = ", ".join(f"`{k}={v!r}`" for k, v in p.knobs.items()) or "(the defaults: NVLAMB)"
        rows.append(f"| `{name}` | {cell(p.reproduces)} | {cell(knobs)} | {cell(p.notes)} |")
    return "\n".join(rows) + "\n"


def model_sizes(arg: str, page: Any) -> str:
    columns = list(next(iter(MODEL_SIZES.values())))
    rows = ["| `model.size` | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, dims in MODEL_SIZES.items():
        rows.append(f"| `{name}` | " + " | ".join(str(dims[c]) for c in columns) + " |")
    return "\n".join(rows) + "\n"


# --- the repository's own files ----------------------------------------------------------------


def make_targets(arg: str, page: Any) -> str:
    """The Makefile's targets with a ``## `` description, variables at their default value."""
    text = (REPO / "Makefile").read_text()
    values = dict(re.findall(r"^([A-Z_]+) \?= ?(.*)$", text, re.M))

    def value(m: re.Match[str]) -> str:
        return values.get(m[1]) or m[1]

    rows = ["| Target | What it does |", "|---|---|"]
    for target, help_ in re.findall(r"^([a-zA-Z_-]+):.*## (.*)$", text, re.M):
        help_ = VARIABLE.sub(value, help_)
        rows.append(f"| `make {target}` | {cell(help_)} |")
    return "\n".join(rows) + "\n"


def _readme() -> str:
    return (REPO / "README.md").read_text()


def readme_section(arg: str, page: Any) -> str:
    """The body of README.md's ``## `` section whose heading starts with ``arg``, its figures
    linked to their copies in the site."""
    text = _readme()
    heads = list(re.finditer(r"^## (.*)$", text, re.M))
    here = posixpath.dirname(page.file.src_uri) or "."

    def relink(m: re.Match[str]) -> str:
        return f"{m[1]}{posixpath.relpath(f'{REPO_FILES}/{m[2]}', here)}{m[3]}"

    def repage(m: re.Match[str]) -> str:  # README's links to docs/x.md, from this page
        return f"{m[1]}{posixpath.relpath(m[2], here)}{m[3]}"

    for i, head in enumerate(heads):
        if head[1].startswith(arg):
            end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
            body = IMAGE.sub(relink, text[head.end() : end].strip("\n"))
            return DOCS_LINK.sub(repage, body) + "\n"
    raise PluginError(f"{page.file.src_uri}: README.md has no '## {arg}...' section")


GENERATORS = {
    "reference": reference,
    "defaults": defaults,
    "knobs": knob_table,
    "presets": preset_table,
    "model-sizes": model_sizes,
    "make-targets": make_targets,
    "readme": readme_section,
}
