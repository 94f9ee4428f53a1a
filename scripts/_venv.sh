# Sourced by the scripts: makes ./.venv (or $RETOUCH_VENV) with a Python of 3.11 or newer.
VENV="${RETOUCH_VENV:-.venv}"
if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  PYTHON="${PYTHON:-}"
  if [ -z "$PYTHON" ]; then
    for candidate in python3.13 python3.12 python3.11 python3; do
      if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        PYTHON="$candidate"
        break
      fi
    done
  fi
  if [ -z "$PYTHON" ]; then
    echo "retouch needs Python 3.11 or newer: install it, or set PYTHON=/path/to/python3.11" >&2
    exit 1
  fi
  if ! "$PYTHON" -m venv --clear "$VENV" || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    echo "could not make a virtual environment with pip in $VENV: on Debian or Ubuntu, apt-get install python3-venv" >&2
    exit 1
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
fi
