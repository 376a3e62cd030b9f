#!/usr/bin/env bash
# Install jobguard for development into .venv from the lock: exact versions, every file checked
# against its hash, nothing resolved on this machine. Used by the README's first command and by .ci/run.
#   bash tools/install.sh            # .venv with jobguard (editable), the tests, lint and lock tools
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
"$python" - <<'PY' || { echo "tools/install.sh: the tests need Python 3.11 or newer (jobguard itself runs on 3.10+); set PYTHON=python3.11" >&2; exit 2; }
import sys
sys.exit(sys.version_info < (3, 11))
PY
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check --quiet)
"${pip[@]}" install --require-hashes --no-deps -r requirements/test.txt
# jobguard itself: its dependencies are all in the lock above; build with the locked setuptools.
"${pip[@]}" install --no-deps --no-build-isolation -e .
