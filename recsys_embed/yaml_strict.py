"""YAML reading that refuses a key given twice in one mapping (PyYAML keeps the last one silently).

    >>> load_yaml("lr: 0.1\\nepochs: 2")
    {'lr': 0.1, 'epochs': 2}
    >>> try:
    ...     load_yaml("lr: 0.1\\nlr: 0.2")
    ... except yaml.YAMLError as err:
    ...     print(describe(err))
    line 2, column 1: found duplicate key 'lr' (first given on line 1)
"""

from __future__ import annotations

from typing import Any

import yaml


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                mark = first.setdefault(key, key_node.start_mark)
            except TypeError:  # an unhashable key: the base class says so
                continue
            if mark is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found duplicate key {key!r} (first given on line {mark.line + 1})", key_node.start_mark,
                )  # fmt: skip
        return super().construct_mapping(node, deep)


def describe(err: yaml.YAMLError) -> str:
    """A YAML error in one line: ``line L, column C: problem``."""
    mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(err).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def load_yaml(text: str) -> Any:
    """``yaml.safe_load(text)``, except that a key given twice in one mapping is a
    ``yaml.YAMLError`` naming the key and both lines."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
