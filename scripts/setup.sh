#!/usr/bin/env bash
# Create .venv and install harmonycloak with its test tools. Safe to run again.
# torch is installed first, pinned to 2.13.0 so that the package's looser requirement
# installs nothing more. Which build pip picks depends on the machine's package index:
# where a CPU wheel of 2.13.0 is provided (as on our CI machines) it takes that; plain PyPI
# on Linux serves the CUDA build (several GB). To choose, install the torch 2.13 build you
# want into .venv before running this: the script keeps whatever torch it finds.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
command -v "$py" >/dev/null || { echo "error: $py not found; install Python 3.10 or newer" >&2; exit 2; }
"$py" - <<'PY' || { echo "error: harmonycloak needs Python 3.10 or newer" >&2; exit 2; }
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY
if [ ! -x .venv/bin/python ]; then
    echo "Creating .venv ..."
    "$py" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "Installing torch 2.13.0 ..."
    "${pip[@]}" "torch==2.13.0"
fi
echo "Installing harmonycloak and test tools ..."
"${pip[@]}" -e ".[dev]"
# The web app's browser tests drive Debian's Chromium (Playwright never downloads one).
# On CI machines (CI=true, root, apt) install it; elsewhere those tests skip with a note.
if [ "${CI:-}" = "true" ] && ! command -v chromium >/dev/null && command -v apt-get >/dev/null \
        && [ "$(id -u)" -eq 0 ]; then
    echo "Installing Chromium for the browser tests ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium fonts-dejavu-core >/dev/null
fi
echo "Ready: .venv/bin/harmonycloak --help"
