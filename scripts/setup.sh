#!/usr/bin/env bash
# One setup script for every entry point (make demo / make test / make bench / CI).
# Idempotent: re-runs only when the requirement files or this script change.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
STAMP="$VENV/.setup-stamp"
want=$(cat scripts/setup.sh scripts/torchvision_shim.py constraints.txt requirements.txt requirements-nodeps.txt pyproject.toml setup.py setup.cfg | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
echo "[setup] preparing $VENV (first run takes ~3-5 min)"

APT_PKGS="libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8"
missing=""
for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "[setup] apt:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
# pip.conf names two local index folders that may be empty; pip warns once per package about them.
pip_install() { "$PY" -m pip install -q "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2); }
export PIP_CONSTRAINT="$PWD/constraints.txt"   # reaches isolated build environments too
export PIP_DISABLE_PIP_VERSION_CHECK=1
TORCH_PIN=$(sed -n 's/^torch==//p' constraints.txt)   # the one place torch's version is written
pip_install "torch==$TORCH_PIN"
pip_install -c constraints.txt -r requirements.txt
pip_install --no-deps -r requirements-nodeps.txt
pip_install --no-deps --no-build-isolation -e .

# torchvision CPU shim: a module + a .pth line, loaded lazily on first import.
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cp scripts/torchvision_shim.py "$SITE/_latentstack_torchvision_shim.py"
echo "import _latentstack_torchvision_shim as _s; _s.install()" > "$SITE/_latentstack_torchvision_shim.pth"

# The machines set PYTHONDONTWRITEBYTECODE=1; precompiled bytecode makes stack imports ~3x faster.
"$PY" -m compileall -q -j 2 "$SITE" >/dev/null 2>&1 || true

TORCH_PIN="$TORCH_PIN" "$PY" - <<'PYCHECK'
import os
import torch, torchvision, metaworld, lerobot, mujoco
assert torch.__version__ == os.environ["TORCH_PIN"] + "+cpu", torch.__version__
print(f"[setup] torch {torch.__version__} torchvision {torchvision.__version__} mujoco {mujoco.__version__}")
PYCHECK
if "$PY" -m pip list 2>/dev/null | grep -i '^nvidia'; then
  echo "[setup] ERROR: CUDA packages were pulled into the venv" >&2; exit 1
fi
"$PY" -m pip freeze --exclude-editable > requirements-lock.txt.new && mv requirements-lock.txt.new "$VENV/requirements-lock.txt"
echo "$want" > "$STAMP"
echo "[setup] done"
