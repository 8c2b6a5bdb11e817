#!/usr/bin/env bash
# Installs the headless browser the viewer test drives (tests/test_viewer.py): Debian's `chromium` and
# `chromium-driver` (chromedriver), with apt-get, as root or through sudo. Does nothing when both are present.
# Selenium itself is a Python package in the project's `test` extra (pyproject.toml).
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "setup_browser: chromium and chromedriver already installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "setup_browser: installing chromium needs root or sudo (apt-get install chromium chromium-driver)" >&2
    exit 1
fi

echo "setup_browser: apt-get install chromium chromium-driver (about 100 MB, a minute or two)"
"${SUDO[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
echo "setup_browser: $(chromium --version 2>/dev/null), $(chromedriver --version | cut -d' ' -f1-2)"
