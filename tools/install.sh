#!/usr/bin/env bash
# Install jobguard for development into .venv from the lock: exact versions, every file checked
# against its hash, nothing resolved on this machine. Used by the README's first command and by .ci/run.
#   bash tools/install.sh            # .venv with jobguard (editable), the tests, lint and lock tools
set -euo pipefail
cd "$(dirname "$0")/.."

# The tests need Python 3.11+ (jobguard itself runs on 3.10+): the interpreter asked for, and the
# one of a .venv already there (made earlier, perhaps by another Python), are both checked.
python="${PYTHON:-python3}"
new_enough() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2> /dev/null; }
new_enough "$python" || { echo "tools/install.sh: $python is missing or older than Python 3.11, which the tests need (jobguard itself runs on 3.10+); set PYTHON=python3.11" >&2; exit 2; }
if [ -e .venv ] && ! new_enough .venv/bin/python; then
  echo "tools/install.sh: .venv is not a virtual environment of Python 3.11 or newer; remove it (rm -rf .venv) and run this again" >&2
  exit 2
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check --quiet)
"${pip[@]}" install --require-hashes --no-deps -r requirements/test.txt
# jobguard itself: its dependencies are all in the lock above; build with the locked setuptools.
"${pip[@]}" install --no-deps --no-build-isolation -e .
# --no-deps checks no dependency: a lock edited by hand or by a bot (botocore moved, boto3 not) stops here.
broken=$(.venv/bin/python -m pip check --disable-pip-version-check) || { echo "$broken" >&2; echo "tools/install.sh: the lock's versions do not fit together: run tools/refresh-lock --no-upgrade" >&2; exit 1; }
