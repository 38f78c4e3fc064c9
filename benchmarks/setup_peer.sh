#!/usr/bin/env bash
# Create (or reuse) the virtualenv holding the speed peer: the Rust engine published on PyPI
# as ``nextstat`` 0.10.1. It shares our import name, so it lives in its own venv and the
# benchmarks call it in a subprocess (benchmarks/peer_runner.py).
#
# Usage:  bash benchmarks/setup_peer.sh
# Env:    NEXTSTAT_PEER_VENV  target venv (default: <repo>/.venv-peer, gitignored)
#         PYTHON              interpreter used to create it (default: python3)
# Idempotent: does nothing but a version check when the peer is already installed.
# numpy and jsonpatch come along: peer_runner.py applies JSON Patches with jsonpatch.
set -euo pipefail

PEER_VERSION="0.10.1"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${NEXTSTAT_PEER_VENV:-${repo_root}/.venv-peer}"
python="${PYTHON:-python3}"

installed_version() {
    "${venv}/bin/python" - <<'PY' 2>/dev/null
from importlib.metadata import version
print(version("nextstat"))
PY
}

if [[ -x "${venv}/bin/python" ]] && [[ "$(installed_version || true)" == "${PEER_VERSION}" ]] \
    && "${venv}/bin/python" -c "import jsonpatch, numpy" 2>/dev/null; then
    echo "peer nextstat ${PEER_VERSION} already in ${venv}"
    exit 0
fi

if [[ ! -x "${venv}/bin/python" ]]; then
    "${python}" -m venv "${venv}"
fi
"${venv}/bin/python" -m pip install --quiet --upgrade pip
"${venv}/bin/python" -m pip install --quiet "nextstat==${PEER_VERSION}" numpy jsonpatch
echo "peer nextstat $(installed_version) installed in ${venv}"
