"""Build the plugin package: dify_tool/dist/heygem-<version>.difypkg, a zip of dify_tool/plugin/
with its files at the root (what `dify plugin package` writes). Install it in Dify under
Plugins -> Install from local package file (an unsigned package needs the Dify admin's
FORCE_VERIFYING_SIGNATURE=false).

    python dify_tool/build.py
"""
from __future__ import annotations

import os
import sys
import zipfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
PLUGIN = os.path.join(HERE, "plugin")


def build(out_dir: str = os.path.join(HERE, "dist")) -> str:
    with open(os.path.join(PLUGIN, "manifest.yaml")) as handle:
        manifest = yaml.safe_load(handle)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{manifest['name']}-{manifest['meta']['version']}.difypkg")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as package:
        for root, folders, files in os.walk(PLUGIN):
            folders[:] = sorted(f for f in folders if f != "__pycache__")
            for name in sorted(files):
                if not name.endswith((".pyc", ".difypkg")):
                    full = os.path.join(root, name)
                    package.write(full, os.path.relpath(full, PLUGIN))
    return path


if __name__ == "__main__":
    print(build(*sys.argv[1:]))
