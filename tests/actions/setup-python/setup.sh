#!/usr/bin/env bash
# Find a Python for $VERSION on this machine: pythonX.Y on PATH, then pyenv's X.Y.*, then python3
# (with a warning). Its real path is the python-path output. With update-environment (the
# default), as the real action puts a tool-cache Python on PATH, a virtual environment made from
# it in $RUNNER_TOOL_CACHE goes on PATH: a workflow's pip installs land there, never in the
# machine's own Python.
set -euo pipefail

runs() { "$1" -c 'import sys; print(sys.executable)' 2>/dev/null; }
python=""
if [ -n "$VERSION" ]; then
  for candidate in "python$VERSION" "${PYENV_ROOT:-$HOME/.pyenv}/versions/$VERSION".*/bin/"python$VERSION"; do
    if python="$(runs "$candidate")" && [ -n "$python" ]; then break; fi
    python=""
  done
fi
if [ -z "$python" ]; then
  python="$(runs python3)"
  [ -n "$VERSION" ] && echo "::warning title=setup-python stand-in::no Python $VERSION on this machine; using $python"
fi
version="$("$python" -c 'import platform; print(platform.python_version())')"

if [ "${UPDATE_ENVIRONMENT:-true}" != false ]; then
  home="${RUNNER_TOOL_CACHE:?}/Python-standin/$version"
  mkdir -p "$(dirname "$home")"
  exec 9>"$home.lock"
  flock 9
  [ -x "$home/bin/python" ] || "$python" -m venv "$home"
  flock -u 9
  python="$home/bin/python"
  echo "$home/bin" >> "$GITHUB_PATH"
  echo "pythonLocation=$home" >> "$GITHUB_ENV"
fi
echo "Python $version: $python"
{
  echo "python-version=$version"
  echo "python-path=$python"
} >> "$GITHUB_OUTPUT"
