"""The document Dify imports as a custom tool (`/openapi.yaml?for=dify`), read by Dify's rules,
and each tool called the way Dify calls it, against the live gateway.

Dify's rules (api/core/tools/utils/parser.py and custom_tool/tool.py, read from its source):
`servers` must be non-empty and its first URL is used as written; each operation's
`operationId` is the tool, its `description` (else `summary`) what the LLM reads; parameters are
the operation's own `parameters` (path-level ones are ignored) and the top-level `properties`
of the request body schema (a `$ref` is resolved; a top-level allOf/oneOf/anyOf yields nothing;
a property that is itself a `$ref` becomes a string); with several content types, all their
properties are listed but the call uses the first; the body is JSON only for exactly
application/json. Types: integer/number -> number, boolean, string, binary -> file, array of
binary -> files, other arrays -> array, objects -> string. Calls carry `Authorization: Bearer
<key>`, time out after 60 s of reading, and status >= 400 is an error."""
from __future__ import annotations

import functools
import time

import pytest
import requests
import yaml



def resolve(spec, node):
    while isinstance(node, dict) and "$ref" in node:
        node = functools.reduce(lambda part, key: part[key], node["$ref"].lstrip("#/").split("/"), spec)
    return node


def dify_type(schema) -> str:
    if "$ref" in schema:
        return "string"
    kind = schema.get("type")
    if kind in ("integer", "number"):
        return "number"
    if kind == "string" and schema.get("format") == "binary":
        return "file"
    if kind == "array":
        return "files" if schema.get("items", {}).get("format") == "binary" else "array"
    if kind == "object":
        return "string"
    return kind or "string"


def dify_tools(spec) -> dict:
    """{tool: {"method", "path", "content_type", "description", "parameters": {name: (type, required)}}}"""
    assert spec.get("servers"), "Dify refuses a document without servers"
    tools = {}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete", "head"):
                continue
            parameters = {}
            for parameter in (resolve(spec, p) for p in operation.get("parameters", [])):
                parameters[parameter["name"]] = (dify_type(parameter.get("schema", {})), bool(parameter.get("required")))
            content = operation.get("requestBody", {}).get("content", {})
            for schema in (resolve(spec, c.get("schema", {})) for c in content.values()):
                required = set(schema.get("required", []))
                for name, prop in schema.get("properties", {}).items():
                    parameters[name] = (dify_type(prop), name in required)
            tools[operation["operationId"]] = {
                "method": method, "path": path, "content_type": next(iter(content), None),
                "description": operation.get("description") or operation.get("summary", ""), "parameters": parameters}
    return tools


def call(spec, tool, key, **arguments):
    """The request Dify's custom tool makes."""
    url = spec["servers"][0]["url"] + tool["path"]
    query, body = {}, {}
    for name, value in arguments.items():
        if "{" + name + "}" in url:
            url = url.replace("{" + name + "}", str(value))
        elif tool["method"] == "get":
            query[name] = value
        else:
            body[name] = value
    headers = {"Authorization": f"Bearer {key}"}
    if tool["content_type"] == "application/json":
        return requests.request(tool["method"], url, params=query, json=body, headers=headers, timeout=(10, 60))
    return requests.request(tool["method"], url, params=query, data=body or None, headers=headers, timeout=(10, 60))


@pytest.fixture()
def service(live, files):
    return live(files)


def test_dify_sees_exactly_the_tools_and_parameters_a_workflow_needs(service):
    answer = requests.get(service.url + "/openapi.yaml", params={"for": "dify"})
    assert answer.status_code == 200
    spec = yaml.safe_load(answer.text)
    assert spec["servers"] == [{"url": service.url}]  # from the request (HEYGEM_PUBLIC_URL when set)
    tools = dify_tools(spec)
    assert {name: tool["parameters"] for name, tool in tools.items()} == {
        "createLipSyncJob": {"audio_url": ("string", True), "templates": ("string", True),
                             "callback_url": ("string", False), "metadata": ("string", False),
                             "zip": ("boolean", False), "wait_seconds": ("number", False)},
        "getLipSyncJob": {"job_id": ("string", True)},
        "cancelLipSyncJob": {"job_id": ("string", True)},
        "listTemplates": {},
    }
    assert tools["createLipSyncJob"]["content_type"] == "application/json"
    for tool in tools.values():
        assert 40 < len(tool["description"]) < 1024  # written for the LLM
    # The generic document stays whole, and its servers follow the request too.
    full = yaml.safe_load(requests.get(service.url + "/openapi.yaml").text)
    assert full["servers"] == [{"url": service.url}] and "x-dify" not in requests.get(service.url + "/openapi.yaml").text
    assert {"health", "metrics", "downloadFile", "openapi"} <= set(dify_tools(full))
    assert requests.get(service.url + "/openapi.yaml", params={"for": "postman"}).status_code == 400
    # A Host header that is not a plain host[:port] is not reflected into `servers`.
    odd = service.app.test_client().get("/openapi.yaml?for=dify", headers={"Host": 'x"y'})
    assert yaml.safe_load(odd.data)["servers"] == [{"url": "http://127.0.0.1:8000"}]


def test_each_tool_works_as_dify_calls_it(service, files):
    spec = yaml.safe_load(requests.get(service.url + "/openapi.yaml", params={"for": "dify"}).text)
    tools, key = dify_tools(spec), service.headers()["Authorization"].split()[1]
    started = time.monotonic()
    answer = call(spec, tools["createLipSyncJob"], key, audio_url=files["speech"],
                  templates=f"{files['h264']}\n{files['tall']}", wait_seconds=45, metadata='{"chat": "c-1"}', zip=True)
    assert answer.status_code == 200, answer.text
    assert time.monotonic() - started < 50  # inside Dify's 60 s read timeout
    job = answer.json()
    assert job["status"] == "succeeded" and job["metadata"] == {"chat": "c-1"} and len(job["video_urls"]) == 2
    assert job["text"].startswith("2 of 2 videos ready:") and job["archive_url"] in job["text"]
    checked = call(spec, tools["getLipSyncJob"], key, job_id=job["id"])
    assert checked.status_code == 200 and checked.json()["id"] == job["id"]
    listed = call(spec, tools["listTemplates"], key)
    assert listed.status_code == 200 and listed.json() == {"templates": []}

    queued = call(spec, tools["createLipSyncJob"], key, audio_url=files["speech"], templates=files["h264"], wait_seconds=0)
    assert queued.status_code == 202 and "getLipSyncJob" in queued.json()["text"] and queued.json()["id"] in queued.json()["text"]
    canceled = call(spec, tools["cancelLipSyncJob"], key, job_id=queued.json()["id"])
    assert canceled.status_code == 200
    bad = call(spec, tools["createLipSyncJob"], key, audio_url=files["speech"], templates=" ", metadata="[1]")
    assert bad.status_code == 400 and "templates" in bad.json()["detail"]
