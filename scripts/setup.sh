#!/usr/bin/env bash
# Installs everything worldweave needs on a fresh machine; safe to run again (fast when nothing changed).
#   1. libusb-1.0, the system library Open3D loads (Debian/Ubuntu, as root or via sudo);
#   2. PyTorch, only when none is installed: the CPU build 2.13.0. With CUDA, install your own torch first;
#   3. buf (the proto linter the tests run), from npm into .tools/;
#   4. worldweave itself (editable) with its pinned dependencies and the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if ! ldconfig -p 2>/dev/null | grep 'libusb-1.0.so.0' >/dev/null; then
  echo "[setup] installing libusb-1.0 (needed by Open3D)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libusb-1.0-0 >/dev/null
fi

if ! $PYTHON -c "import torch" 2>/dev/null; then
  echo "[setup] no PyTorch found: installing the CPU build torch==2.13.0"
  $PYTHON -m pip install --quiet "torch==2.13.0"
fi

# buf lints the .proto in the tests; installed from the npm registry into .tools/ (needs node and npm).
if [ ! -x .tools/node_modules/.bin/buf ]; then
  if command -v npm >/dev/null; then
    echo "[setup] installing buf (proto linter) into .tools/"
    npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@1.75.0 >/dev/null
  else
    echo "[setup] npm not found: the buf lint test will fail until @bufbuild/buf is installed" >&2
  fi
fi

stamp=.setup-stamp
want=$(cat pyproject.toml setup.py | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! $PYTHON -c "import worldweave.bridge" 2>/dev/null; then
  echo "[setup] installing worldweave and its pinned dependencies"
  $PYTHON -m pip install --quiet --disable-pip-version-check -e ".[test]"
  echo "$want" > "$stamp"
fi
echo "[setup] ready: $($PYTHON -c 'import torch; print("torch", torch.__version__)')"
