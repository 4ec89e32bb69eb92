"""The importable Dify workflows (dify_tool/workflows/*.yml) hold together: DSL 0.6.0, every
edge joins existing nodes (and an if-else's branches are its cases), every variable reference
points at an output of a node upstream (or at an environment or system variable), and the
HeyGem tool nodes use tools and parameters our plugin has."""
from __future__ import annotations

import glob
import os
import re

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOWS = sorted(glob.glob(os.path.join(ROOT, "dify_tool", "workflows", "*.yml")))
PLUGIN = os.path.join(ROOT, "dify_tool", "plugin")
REFERENCE = re.compile(r"\{\{#([\w-]+)\.([\w]+)(?:\.[\w]+)*#\}\}")


def plugin_tools() -> dict[str, set[str]]:
    with open(os.path.join(PLUGIN, "manifest.yaml")) as handle:
        manifest = yaml.safe_load(handle)
    provider_file = manifest["plugins"]["tools"][0]
    with open(os.path.join(PLUGIN, provider_file)) as handle:
        provider = yaml.safe_load(handle)
    tools = {}
    for path in provider["tools"]:
        with open(os.path.join(PLUGIN, path)) as handle:
            tool = yaml.safe_load(handle)
        tools[tool["identity"]["name"]] = {p["name"] for p in tool.get("parameters") or []}
    return {f"{manifest['author']}/{manifest['name']}/{provider['identity']['name']}": tools}


def outputs(node: dict) -> set[str]:
    data = node["data"]
    kind = data["type"]
    if kind == "start":
        return {v["variable"] for v in data.get("variables", [])}
    if kind == "trigger-webhook":
        return {v["variable"] for v in data.get("variables", [])}
    return {"llm": {"text", "usage"}, "tool": {"text", "files", "json"}, "template-transform": {"output"},
            "list-operator": {"result", "first_record", "last_record"}, "http-request": {"body", "status_code", "headers", "files"},
            "code": set(data.get("outputs", {})), "if-else": set(), "end": set()}[kind]


def references(value) -> list[tuple[str, str]]:
    """(node, variable) pairs a node's data refers to: {{#node.var#}} in text, value selectors."""
    found = []
    if isinstance(value, str):
        found += REFERENCE.findall(value)
    elif isinstance(value, dict):
        for key, child in value.items():
            if key in ("value_selector", "variable_selector", "variable") and isinstance(child, list) and len(child) >= 2:
                found.append((child[0], child[1]))
            elif key == "value" and isinstance(child, list) and value.get("type") == "variable":
                found.append((child[0], child[1]))
            else:
                found += references(child)
    elif isinstance(value, list):
        for child in value:
            found += references(child)
    return found


@pytest.mark.parametrize("path", WORKFLOWS, ids=os.path.basename)
def test_workflow_holds_together(path):
    with open(path) as handle:
        dsl = yaml.safe_load(handle)
    assert dsl["kind"] == "app" and dsl["version"] == "0.6.0" and dsl["app"]["mode"] == "workflow"
    graph = dsl["workflow"]["graph"]
    nodes = {node["id"]: node for node in graph["nodes"]}
    assert len(nodes) == len(graph["nodes"]), "node ids are unique"
    entries = [n for n in nodes.values() if n["data"]["type"] in ("start", "trigger-webhook")]
    assert len(entries) == 1 and any(n["data"]["type"] == "end" for n in nodes.values())

    upstream: dict[str, set[str]] = {node_id: set() for node_id in nodes}
    for edge in graph["edges"]:
        assert edge["source"] in nodes and edge["target"] in nodes, edge["id"]
        source = nodes[edge["source"]]["data"]
        assert edge["data"]["sourceType"] == source["type"] and edge["data"]["targetType"] == nodes[edge["target"]]["data"]["type"]
        if source["type"] == "if-else":
            assert edge["sourceHandle"] in {c["case_id"] for c in source["cases"]} | {"false"}, edge["id"]
        upstream[edge["target"]].add(edge["source"])
    for node_id in nodes:  # everything but the entry is reached from it
        seen, todo = set(), [node_id]
        while todo:
            current = todo.pop()
            for parent in upstream[current] - seen:
                seen.add(parent)
                todo.append(parent)
        upstream[node_id] = seen
        assert node_id == entries[0]["id"] or entries[0]["id"] in seen, f"{node_id} is not reached"

    environment = {v["name"] for v in dsl["workflow"]["environment_variables"]}
    tools = plugin_tools()
    for node_id, node in nodes.items():
        for source, variable in references(node["data"]):
            if source == "env":
                assert variable in environment, f"{node_id}: env.{variable}"
            elif source != "sys":
                assert source in upstream[node_id], f"{node_id} refers to {source}, which is not upstream"
                assert variable in outputs(nodes[source]), f"{node_id} refers to {source}.{variable}, not an output"
        data = node["data"]
        if data["type"] == "tool" and data["provider_id"] in tools:
            parameters = tools[data["provider_id"]][data["tool_name"]]
            used = set(data.get("tool_parameters", {})) | set(data.get("tool_configurations", {}))
            assert used <= parameters, f"{node_id}: {used - parameters} are not parameters of {data['tool_name']}"


def test_the_plugin_tool_is_used():
    texts = "".join(open(path).read() for path in WORKFLOWS)
    assert "provider_id: heygem/heygem/heygem" in texts and "trigger-webhook" in texts
