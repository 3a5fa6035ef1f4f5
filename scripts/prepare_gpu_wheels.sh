#!/usr/bin/env bash
# Download the wheels that benchmarks/gpu_check.py needs on the GPU machine into .whl/ (or $1).
#
# That machine has no package registry. Its image (the device docs' package list) has torch,
# transformers, networkx, pluggy, typer, rich, jinja2, safetensors, filelock, psutil, tokenizers and
# pytest, but not pydantic (imported by recmas_graph's core) or graphviz. This fetches those, with
# pydantic's own dependencies, for CPython 3.12 on x86-64 Linux, at the versions installed in this
# checkout's .venv (the ones the tests ran with), plus typing-extensions (pydantic needs a recent one).
#
# .whl/ is git-ignored: it travels to the GPU machine only when the device call names it in `carry`.
# Then, there (see docs/performance.md, "GPU"):
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 && python3 benchmarks/gpu_check.py --out $OUT/gpu
#
# Usage: bash scripts/prepare_gpu_wheels.sh [DEST]   (GPU_PYTHON_VERSION=3.12 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${1:-.whl}"
PYVER="${GPU_PYTHON_VERSION:-3.12}"
PY="${PYTHON:-.venv/bin/python}"
[[ -x "$PY" ]] || PY=python3

# name=fallback version; the .venv's version wins when it has the package
PACKAGES=(pydantic=2.14.4 pydantic-core=2.50.5 annotated-types=0.8.0 typing-inspection=0.4.5
          typing-extensions=4.16.0 graphviz=0.21)
pins=()
for item in "${PACKAGES[@]}"; do
  name="${item%%=*}"
  version="$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null \
             || echo "${item#*=}")"
  pins+=("$name==$version")
done

mkdir -p "$DEST"
rm -f "$DEST"/*.whl  # one version of each: two would stop the install there
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$DEST" "${pins[@]}"

ls -l "$DEST"/*.whl
kib=$(du -sk "$DEST" | cut -f1)
echo "wheels: ${pins[*]}"
echo "size of $DEST: $((kib / 1024)) MiB ($kib KiB); the working tree and carried paths travel together, 64 MiB at most"
if (( kib > 32 * 1024 )); then
  echo "warning: $DEST is over 32 MiB; check that the tree and it stay under 64 MiB" >&2
fi
git check-ignore -q "$DEST" 2>/dev/null || echo "note: $DEST is not git-ignored; it would travel with every call" >&2
