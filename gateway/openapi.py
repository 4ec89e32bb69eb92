"""The OpenAPI document, as served: `openapi.yaml` with the caller's server URL, and its Dify
shape (`?for=dify`), generated from the same file.

Dify's custom-tool importer reads an operation's own `parameters` only (not the path's), the
top-level `properties` of a request body schema (not allOf), calls with the first content type
listed, and shows objects as strings. The Dify shape therefore keeps only the operations marked
`x-dify` (with the description written for an LLM), moves path parameters into each operation,
keeps the JSON body only, flattened, with the `x-dify.properties` overrides (how Dify should show
a field: `templates` as text, `metadata` as JSON text, a shorter wait)."""
from __future__ import annotations

import copy
import functools
import os

import yaml

SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "openapi.yaml")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


@functools.lru_cache(maxsize=1)
def _source(mtime: float) -> dict:
    with open(SOURCE) as handle:
        return yaml.safe_load(handle)


def document(server_url: str, for_dify: bool = False) -> str:
    return _rendered(os.path.getmtime(SOURCE), server_url, for_dify)


@functools.lru_cache(maxsize=16)
def _rendered(mtime: float, server_url: str, for_dify: bool) -> str:
    spec = copy.deepcopy(_source(mtime))
    spec["servers"] = [{"url": server_url.rstrip("/")}]
    if for_dify:
        spec = _dify(spec)
    else:
        _strip_extensions(spec)
    return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=100)


def _resolve(spec: dict, node):
    while isinstance(node, dict) and "$ref" in node:
        node = functools.reduce(lambda part, key: part[key], node["$ref"].lstrip("#/").split("/"), spec)
    return node


def _flat_schema(spec: dict, schema: dict) -> dict:
    """An object schema with its allOf parts merged into plain properties and required."""
    schema = _resolve(spec, schema)
    properties, required = dict(schema.get("properties", {})), list(schema.get("required", []))
    for part in schema.get("allOf", []):
        flat = _flat_schema(spec, part)
        properties.update(flat["properties"])
        required += flat["required"]
    required = list(dict.fromkeys(required))
    ordered = {name: properties[name] for name in required if name in properties}  # Dify lists them in order
    ordered.update(properties)
    return {"type": "object", "required": required, "properties": ordered}


def _dify(spec: dict) -> dict:
    paths = {}
    for path, item in spec["paths"].items():
        shared = item.get("parameters", [])
        for method in METHODS:
            operation = item.get(method)
            if not operation or "x-dify" not in operation:
                continue
            dify = operation.pop("x-dify") or {}
            operation.pop("callbacks", None)
            operation["description"] = dify.get("description", operation.get("description", ""))
            # Header parameters (Idempotency-Key) mean nothing to an LLM; Dify sends the key itself.
            parameters = [p for p in (_resolve(spec, p) for p in shared + operation.get("parameters", []))
                          if p["in"] != "header"]
            if parameters:
                operation["parameters"] = parameters
            else:
                operation.pop("parameters", None)
            body = operation.get("requestBody")
            if body:
                schema = _flat_schema(spec, body["content"]["application/json"]["schema"])
                for name, override in dify.get("properties", {}).items():
                    schema["properties"][name] = override
                operation["requestBody"] = {"required": body.get("required", False),
                                            "content": {"application/json": {"schema": schema}}}
            for response in operation.get("responses", {}).values():
                response.pop("links", None)
            paths.setdefault(path, {})[method] = operation
    spec["paths"] = paths
    spec["info"]["description"] = ("Make lip-synced talking-presenter videos from a narration and presenter templates, "
                                   "and check on them.")
    spec.get("components", {}).pop("links", None)
    _strip_extensions(spec)
    return spec


def _strip_extensions(spec: dict) -> None:
    for item in spec["paths"].values():
        for method in METHODS:
            if method in item:
                item[method].pop("x-dify", None)
