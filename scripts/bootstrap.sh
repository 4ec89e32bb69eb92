#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine: espeak-ng (demo and test narration),
# chromium (the console's browser tests), redis-server and PostgreSQL 15 (real servers the tests
# start on 127.0.0.1), nginx (`nginx -t` on the shipped config), a virtualenv with the engine and its test tools. Safe to run again; skips
# what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v espeak-ng >/dev/null || ! command -v chromium >/dev/null || ! command -v redis-server >/dev/null \
   || [ ! -x /usr/lib/postgresql/15/bin/postgres ] || [ ! -x /usr/sbin/nginx ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
    espeak-ng chromium redis-server postgresql-15 nginx
fi
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  touch "$stamp"
fi
