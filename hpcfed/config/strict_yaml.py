"""YAML read strictly: what PyYAML accepts silently (a key given twice, the last one winning) or reports over
several lines (a syntax error) becomes one ConfigError naming the source, the line and the fix."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml

from hpcfed.errors import ConfigError

MERGE_TAG = "tag:yaml.org,2002:merge"  # `<<: *base` may repeat a key on purpose: an explicit key wins over it


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping, naming the dotted key and both lines."""

    text_source = "<text>"  # where the text came from, for the message (Reader has `name` and `prefix`)
    key_prefix = ""  # dotted key the document sits under (an override's value)
    show_lines = True  # False for a one-line text (an override)

    def construct_document(self, node: yaml.Node) -> Any:
        self.root = node  # to name the dotted key of a duplicate, found only on the error path
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key_node.tag == MERGE_TAG or not isinstance(key, Hashable):
                continue  # the base class merges, or refuses an unhashable key with its own message
            line = key_node.start_mark.line + 1
            if key in first_line:
                dotted = self.key_prefix + ".".join((*_path_to(self.root, node), str(key)))
                lines = f"lines {first_line[key]} and {line}" if first_line[key] != line else f"both on line {line}"
                where = f"{self.text_source} ({lines})" if self.show_lines else self.text_source
                raise ConfigError(dotted, f"given twice in {where}; YAML would silently keep the last one",
                                  f"delete one of the two '{key}:' lines")
            first_line[key] = line
        return super().construct_mapping(node, deep)


def _path_to(node: yaml.Node, target: yaml.Node, path: tuple[str, ...] = (), seen: set | None = None
             ) -> tuple[str, ...]:
    """The keys leading from `node` to `target` (an alias may point back up: each node is visited once)."""
    seen = set() if seen is None else seen
    if node is target:
        return path
    if id(node) in seen:
        return ()
    seen.add(id(node))
    children = []
    if isinstance(node, yaml.MappingNode):
        children = [(str(key.value), value) for key, value in node.value]
    elif isinstance(node, yaml.SequenceNode):
        children = [(f"[{i}]", value) for i, value in enumerate(node.value)]
    for name, child in children:
        found = _path_to(child, target, (*path, name), seen)
        if found:
            return found
    return ()


def load_yaml(text: str, source: str, prefix: str = "", show_lines: bool = True) -> Any:
    """The YAML document in `text` (from `source`, e.g. a file name), with unique keys; a syntax error is one
    ConfigError at source:line naming the parser's problem. `prefix`: the dotted key the text is the value of."""
    loader = _UniqueKeyLoader(text)
    loader.text_source, loader.key_prefix, loader.show_lines = source, prefix, show_lines
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}:{mark.line + 1}" if mark is not None and show_lines else source
        problem = " ".join(part for part in (e.problem, f"({e.context})" if e.context else "") if part)
        fix = ("correct the YAML at that line (indentation, a missing ':' or closing bracket, a tab)" if show_lines
               else "write the value as YAML, e.g. -o 'data.domains=[a, b]'")
        raise ConfigError(where, f"not valid YAML: {' '.join(problem.split())}", fix) from None
    except yaml.YAMLError as e:
        raise ConfigError(source, f"not valid YAML: {' '.join(str(e).split())}", "correct the YAML syntax") from None
    finally:
        loader.dispose()
