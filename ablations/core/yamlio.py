"""YAML in: shared by the run CLI and the sweep file.

``load_yaml`` reads YAML 1.2 numbers (``1e-3`` is a float; PyYAML's YAML 1.1 resolver makes it
a string) and rejects a key given twice in one mapping (PyYAML silently keeps the last one, so a
pasted-over ``lr:`` would decide a run unseen); ``parse_value`` reads a command-line override's
value the same way. The overrides themselves are applied by
:func:`ablations.config.with_overrides`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ablations.core.errors import ConfigError, one_line

_MERGE_TAG = "tag:yaml.org,2002:merge"
_MERGE_HINT = " (merge several anchors with <<: [*a, *b])"


class DuplicateKeyError(yaml.YAMLError):
    """A key given twice in one mapping.

    ``path``: the key's dotted path in the document (``experiments.e.tune.phases.0.lr``);
    ``lines``: 1-based lines of the first and the repeated key; ``merge``: the key is ``<<``.
    """

    def __init__(self, path: str, first: yaml.Mark, again: yaml.Mark, merge: bool) -> None:
        self.path = path
        self.lines = (first.line + 1, again.line + 1)
        self.merge = merge
        super().__init__(f"{path}: duplicate key at lines {self.lines[0]} and {self.lines[1]}")


class Loader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 floats that rejects duplicated mapping keys.

    The check runs on the composed node tree, before construction, because construction
    flattens merge keys (``<<: *anchor``) into the mapping: there a key that overrides a merged
    one looks like a duplicate, and it is not one (YAML's merge rule). Two ``<<`` keys in one
    mapping are duplicates (several anchors merge as ``<<: [*a, *b]``).
    """

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            self._reject_duplicate_keys(node)
        return node

    def _reject_duplicate_keys(self, root: yaml.Node) -> None:
        """Raise :class:`DuplicateKeyError` for the first repeated key in document order.

        Depth-first in document order, each node once: an alias shares its anchor's node (and
        may form a cycle), and a duplicate inside an anchor is reported at the anchor, where
        it is written. Iterative, so that deep documents cannot hit Python's recursion limit.
        """
        stack: list[tuple[yaml.Node, tuple[str, ...]]] = [(root, ())]
        seen: set[int] = set()
        while stack:
            node, path = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            children: list[tuple[yaml.Node, tuple[str, ...]]] = []
            if isinstance(node, yaml.SequenceNode):
                children = [(item, (*path, str(i))) for i, item in enumerate(node.value)]
            elif isinstance(node, yaml.MappingNode):
                first: dict[Any, yaml.Mark] = {}
                for key_node, value_node in node.value:
                    key, name = self._key(key_node)
                    where = (*path, name)
                    if key in first:
                        merge = key_node.tag == _MERGE_TAG
                        dotted = ".".join(where)
                        raise DuplicateKeyError(dotted, first[key], key_node.start_mark, merge)
                    first[key] = key_node.start_mark
                    children.append((value_node, where))
            stack.extend(reversed(children))

    def _key(self, node: yaml.Node) -> tuple[Any, str]:
        """A mapping key as the constructed dict compares it (``1``, ``0x1`` and ``true`` are
        one key there, so PyYAML would keep only the last), and its name in the key path."""
        if node.tag == _MERGE_TAG:
            return _MERGE_TAG, "<<"
        if not isinstance(node, yaml.ScalarNode):
            return object(), "?"  # an unhashable key: construction reports it
        key = self.construct_object(node, deep=True)
        return key, str(key)


Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[0-9][0-9_]*[eE][-+]?[0-9]+|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml(path: Path, what: str) -> Any:
    """The YAML document in ``path``; ``what`` names the file in errors (``--config``)."""
    try:
        return yaml.load(Path(path).read_text(), Loader=Loader)
    except OSError as e:
        raise ConfigError(f"{what}: cannot read {path}: {e.strerror}") from None
    except DuplicateKeyError as e:
        first, again = e.lines
        raise ConfigError(
            f"{e.path}: duplicate key in {path}: expected each key once per mapping, got it at "
            f"lines {first} and {again}{_MERGE_HINT if e.merge else ''}"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{what}: {path} is not valid YAML: {one_line(e, typed=False)}") from None


def parse_value(key: str, text: str) -> Any:
    """A command-line override's value, parsed as YAML."""
    try:
        return yaml.load(text, Loader=Loader)
    except DuplicateKeyError as e:
        raise ConfigError(
            f"{key}.{e.path}: duplicate key in {text!r}: expected each key once per mapping"
            f"{_MERGE_HINT if e.merge else ''}"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{key}: bad value {text!r}: {one_line(e, typed=False)}") from None
