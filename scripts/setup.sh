#!/usr/bin/env bash
# Sets worldweave up in the project's virtual environment .venv/; needs no root and no npm; safe to run again
# (a few seconds when nothing changed). Afterwards run its programs as .venv/bin/worldweave, .venv/bin/pytest.
#   1. .venv/, made with ${PYTHON:-python3} (>= 3.10). An environment you already have (say one holding your CUDA
#      build of torch) can stand in for it: `ln -s /path/to/env .venv` before running this.
#   2. PyTorch, only when .venv has none: torch==2.13.0 (the CPU build where pip finds one); a torch already there
#      is kept, so install your CUDA build into .venv first to use a GPU.
#   3. worldweave itself (editable) with its pinned dependencies and the test tools; libusb (which Open3D links)
#      and buf (the proto linter) come as wheels from PyPI.
# What only the system can provide is checked and named in one line: Python's venv module, and the OpenGL/X11
# libraries Open3D links (present on desktops; on a bare server: apt-get install libgl1 libegl1 libx11-6).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv
PIP=(-m pip install --quiet --disable-pip-version-check)

if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -c "import ensurepip, venv" 2>/dev/null; then
    echo "[setup] $PYTHON cannot make a virtual environment: on Debian/Ubuntu, apt-get install python3-venv" >&2
    exit 1
  fi
  echo "[setup] creating the virtual environment $VENV/ with $PYTHON ($("$PYTHON" --version 2>&1))"
  "$PYTHON" -m venv "$VENV"
fi
py="$VENV/bin/python"

if ! "$py" -c "import torch" 2>/dev/null; then
  echo "[setup] no PyTorch in $VENV/: installing torch==2.13.0 (about 1 minute)"
  "$py" "${PIP[@]}" "torch==2.13.0"
fi

stamp="$VENV/.worldweave-setup"
want=$(cat pyproject.toml setup.py | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! "$py" -c "import worldweave.bridge" 2>/dev/null; then
  echo "[setup] installing worldweave and its pinned dependencies into $VENV/ (1-3 minutes the first time)"
  "$py" "${PIP[@]}" -e ".[test]"
  echo "$want" > "$stamp"
fi

if ! err=$("$py" -c "from worldweave.bridge.open3d_import import load_open3d; load_open3d()" 2>&1); then
  echo "[setup] Open3D does not load (${err##*$'\n'}): on Debian/Ubuntu, apt-get install libgl1 libegl1 libx11-6" >&2
  exit 1
fi
echo "[setup] ready in $VENV/: $("$py" -c 'import torch; print("torch", torch.__version__)'); run .venv/bin/worldweave"
