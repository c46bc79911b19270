"""values.yaml and values.schema.json: every value documented and covered."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from .chart_render import CHART

KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][\w.-]*):(?:\s|$)")


def load_schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


def resolve(node: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follows "$ref" and a single-element "allOf" wrapper."""
    while True:
        if "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[-1]]
        elif "allOf" in node and len(node["allOf"]) == 1:
            node = node["allOf"][0]
        else:
            return node


def keyed_lines() -> list[tuple[tuple[str, ...], int]]:
    """(key path, line index) for every mapping key in values.yaml outside lists."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    found = []
    for index, line in enumerate(lines):
        match = KEY_LINE.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        found.append((tuple(k for _, k in stack), index))
    return found


def schema_node(path: tuple[str, ...], schema: dict[str, Any]) -> dict[str, Any] | None:
    """The schema of a key path, or None where the path leaves the declared properties."""
    node = resolve(schema, schema)
    for key in path:
        props = node.get("properties")
        if props is None or key not in props:
            return None
        node = resolve(props[key], schema)
    return node


def test_every_leaf_value_has_a_comment():
    schema = load_schema()
    lines = (CHART / "values.yaml").read_text().splitlines()
    kubernetes_resources = schema["definitions"]["resources"]  # one value, one comment
    undocumented = []
    checked = 0
    for path, index in keyed_lines():
        node = schema_node(path, schema)
        parent = schema_node(path[:-1], schema)
        if node is None or parent is kubernetes_resources:
            continue  # inside a free-form map/list or a Kubernetes object
        if "properties" in node and node is not kubernetes_resources:
            continue  # a group, documented by its members
        checked += 1
        previous = next((ln for ln in reversed(lines[:index]) if ln.strip()), "")
        if not previous.strip().startswith("#"):
            undocumented.append(".".join(path))
    assert checked > 80
    assert undocumented == []


def test_schema_declares_exactly_the_values():
    schema = load_schema()
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        node = resolve(node, schema)
        props = node.get("properties")
        if props is None:
            return
        assert node.get("additionalProperties") is False, f"{path or '(root)'} is open"
        assert set(value) == set(props), f"{path or '(root)'}: values and schema differ"
        for key, sub in value.items():
            walk(sub, props[key], f"{path}.{key}" if path else key)

    walk(values, schema, "")
