"""The Dify plugin (dify_tool/plugin) under Python 3.12 with the dify_plugin SDK's own entry
points, against a live gateway; and its package. The plugin gets its own venv
(.venv-plugin, made here on first use): the service itself stays on Python 3.11."""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN = os.path.join(ROOT, "dify_tool", "plugin")
RUNNER = os.path.join(ROOT, "tests", "dify_plugin_runner.py")
VENV = os.path.join(ROOT, ".venv-plugin")


def python312() -> str:
    # pyenv's own build first: its `python3.12` shim fails unless 3.12 is the selected version
    found = next(iter(sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python")))), None)
    found = found or shutil.which("python3.12")
    if not found:
        pytest.fail("the plugin's tests need Python 3.12 (dify_plugin requires it); install it (pyenv install 3.12)")
    return found


@pytest.fixture(scope="session")
def plugin_python() -> str:
    python = os.path.join(VENV, "bin", "python")
    requirements = os.path.join(PLUGIN, "requirements.txt")
    stamp = os.path.join(VENV, ".installed")
    if not os.path.exists(python):
        subprocess.run([python312(), "-m", "venv", VENV], check=True)
    if not os.path.exists(stamp) or os.path.getmtime(requirements) > os.path.getmtime(stamp):
        subprocess.run([python, "-m", "pip", "install", "-q", "-r", requirements, "pyyaml"], check=True)
        open(stamp, "w").close()
    return python


def run(plugin_python, request: dict, timeout=600) -> list[dict]:
    done = subprocess.run([plugin_python, RUNNER, json.dumps(request)], cwd=PLUGIN, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith(("{", "["))]


@pytest.fixture()
def service(live, files):
    return live(files)


def test_the_plugin_makes_videos_streaming_progress(plugin_python, service, files, media):
    credentials = {"base_url": service.url, "api_token": service.headers()["Authorization"].split()[1]}
    assert run(plugin_python, {"validate": True, "credentials": credentials}) == [{"valid": True}]
    wrong = run(plugin_python, {"validate": True, "credentials": {**credentials, "api_token": "nope"}})[0]
    assert not wrong["valid"] and "401" in wrong["error"] and "ToolProviderCredentialValidationError" in wrong["error"]

    with open(media["h264"], "rb") as handle:  # a template in the library, chosen by name
        import requests
        anna = requests.post(service.url + "/api/v1/templates", headers=service.headers(),
                             files={"file": ("Anna.mp4", handle)}).json()
    options = run(plugin_python, {"tool": "make_videos", "credentials": credentials, "options": "template"})[0]
    assert [(o["value"], o["label"]["en_US"]) for o in options] == [(anna["id"], "Anna.mp4")]

    # The narration as a file from the workflow (as the daemon passes a TTS tool's output).
    narration = {"dify_model_identity": "__dify__file__", "url": files["speech"], "filename": "speech.wav",
                 "mime_type": "audio/wav", "type": "audio", "extension": ".wav", "size": 1}
    messages = run(plugin_python, {"tool": "make_videos", "credentials": credentials, "parameters": {
        "narration": narration, "template": anna["id"], "templates": files["tall"], "zip": True}})
    kinds = [m["type"] for m in messages]
    assert "error" not in kinds, messages
    texts = [m["message"]["text"] for m in messages if m["type"] == "text"]
    assert texts[0].startswith("Making 2 presenter videos (job ")
    assert any(t.split(":")[0] in ("Queued", "Running", "Succeeded") for t in texts[1:-1])  # progress lines
    assert texts[-1].startswith("2 of 2 videos ready:")
    job = next(m["message"]["json_object"] for m in messages if m["type"] == "json")
    assert job["status"] == "succeeded" and len(job["video_urls"]) == 2 and job["archive_url"]
    assert [m["message"]["text"] for m in messages if m["type"] == "link"] == job["video_urls"] + [job["archive_url"]]
    blobs = [m for m in messages if m["type"] == "blob"]
    assert [b["head"] for b in blobs] == ["ftyp", "ftyp"] and blobs[0]["meta"]["mime_type"] == "video/mp4"
    first_progress = next(m["t"] for m in messages if m["type"] == "text" and m["message"]["text"].startswith("Making"))
    print(f"\nplugin run: first streamed message after {first_progress:.2f} s; {len(messages)} messages:")
    for message in messages:
        print("  ", message["t"], message["type"], (message.get("message") or {}).get("text", "")[:100].replace("\n", " | "))

    checked = run(plugin_python, {"tool": "check_job", "credentials": credentials, "parameters": {"job_id": job["id"]}})
    assert checked[0]["message"]["text"].startswith("2 of 2 videos ready:") and not [m for m in checked if m["type"] == "blob"]
    listed = run(plugin_python, {"tool": "list_templates", "credentials": credentials, "parameters": {}})
    assert "Anna.mp4" in listed[0]["message"]["text"]
    unknown = run(plugin_python, {"tool": "make_videos", "credentials": credentials, "parameters": {
        "narration_url": files["speech"], "templates": "Bob"}})
    assert unknown[-1]["type"] == "error" and "no ready template named 'Bob'" in unknown[-1]["error"]
    assert "Anna.mp4" in unknown[-1]["error"]


def test_the_sdk_loads_the_manifest_provider_and_tools(plugin_python):
    loaded = run(plugin_python, {"check": True})[0]
    assert loaded == {"plugin": "heygem", "tools": {
        "make_videos": ["narration", "narration_url", "template", "templates", "zip", "attach_videos", "wait_seconds",
                        "metadata", "callback_url"],
        "check_job": ["job_id", "attach_videos"], "list_templates": []}}


def test_the_package_holds_the_plugin_at_its_root(tmp_path):
    done = subprocess.run([sys.executable, os.path.join(ROOT, "dify_tool", "build.py"), str(tmp_path)],
                          capture_output=True, text=True, check=True)
    with zipfile.ZipFile(done.stdout.strip()) as package:
        names = set(package.namelist())
        manifest = yaml.safe_load(package.read("manifest.yaml"))
        provider = yaml.safe_load(package.read("provider/heygem.yaml"))
    assert {"manifest.yaml", "main.py", "requirements.txt", "_assets/icon.svg", "PRIVACY.md"} <= names
    assert manifest["plugins"]["tools"] == ["provider/heygem.yaml"] and manifest["meta"]["runner"]["version"] == "3.12"
    for tool in provider["tools"]:
        assert tool in names
        with zipfile.ZipFile(done.stdout.strip()) as package:
            source = yaml.safe_load(package.read(tool))["extra"]["python"]["source"]
        assert source in names
    assert provider["extra"]["python"]["source"] in names
    assert not any("__pycache__" in name for name in names)
