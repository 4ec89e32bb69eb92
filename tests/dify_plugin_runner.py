"""Runs one of the Dify plugin's tools through the SDK's own entry points, as the plugin daemon
would: `Tool.from_credentials(credentials, user_id).invoke(parameters)`; or the provider's
credential check, or a select's options. Run with the plugin's Python 3.12, from dify_tool/plugin;
prints one JSON line per message, with the seconds since the call began.

    python dify_plugin_runner.py '{"tool": "make_videos", "credentials": {...}, "parameters": {...}}'
"""
import importlib
import json
import os
import sys
import time

import yaml
from dify_plugin import Tool, ToolProvider


def subclass(module_path: str, base: type) -> type:
    module = importlib.import_module(module_path.removesuffix(".py").replace("/", "."))
    return next(v for v in vars(module).values() if isinstance(v, type) and issubclass(v, base) and v is not base)


def main() -> None:
    sys.path.insert(0, os.getcwd())  # the plugin's folder, as the daemon runs it
    request = json.loads(sys.argv[1])
    started = time.monotonic()
    if request.get("check"):  # the manifest and provider as the SDK loads them (pydantic models)
        from dify_plugin.core.entities.plugin.setup import PluginConfiguration
        from dify_plugin.entities.tool import ToolProviderConfiguration

        with open("manifest.yaml") as handle:
            manifest = PluginConfiguration(**yaml.safe_load(handle))
        with open(manifest.plugins.tools[0]) as handle:
            provider = ToolProviderConfiguration(**yaml.safe_load(handle))
        print(json.dumps({"plugin": manifest.name, "tools": {t.identity.name: [p.name for p in t.parameters]
                                                             for t in provider.tools}}))
        return
    if request.get("validate"):
        with open("provider/heygem.yaml") as handle:
            provider = subclass(yaml.safe_load(handle)["extra"]["python"]["source"], ToolProvider)
        try:
            provider().validate_credentials(request["credentials"])
            print(json.dumps({"valid": True}))
        except Exception as exc:  # noqa: BLE001 - reported to the test
            print(json.dumps({"valid": False, "error": f"{type(exc).__name__}: {exc}"}))
        return
    with open(f"tools/{request['tool']}.yaml") as handle:
        tool_class = subclass(yaml.safe_load(handle)["extra"]["python"]["source"], Tool)
    tool = tool_class.from_credentials(request["credentials"], user_id="test-user")
    if "options" in request:
        print(json.dumps([option.model_dump() for option in tool.fetch_parameter_options(request["options"])]))
        return
    try:
        for message in tool.invoke(request["parameters"]):
            entry = {"t": round(time.monotonic() - started, 3), "type": message.type.value}
            if message.type.value == "blob":
                entry.update(size=len(message.message.blob), head=message.message.blob[4:8].decode("latin-1"),
                             meta=message.meta)
            else:
                entry["message"] = message.message.model_dump()
            print(json.dumps(entry, default=str), flush=True)
    except Exception as exc:  # noqa: BLE001 - reported to the test
        print(json.dumps({"t": round(time.monotonic() - started, 3), "type": "error",
                          "error": f"{type(exc).__name__}: {exc}"}), flush=True)


if __name__ == "__main__":
    main()
