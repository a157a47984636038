#!/usr/bin/env bash
# Creates the separate virtualenv in which benches/test_decoder_archs.py runs
# sentence-transformers on torch (CPU), the comparison it prints ratios
# against. It is never part of the test command: the bench skips the torch
# side, saying why, when this environment does not exist.
#
# usage: benches/make_torch_env.sh            (then run the bench as usual)
#   CAXTON_TORCH_VENV=/path   where to create it
#                             (default ${XDG_CACHE_HOME:-~/.cache}/caxton-bench-torch)
#   PYTHON=python3.11         the interpreter to base it on
#
# PyPI's Linux torch wheel is the CUDA build (torch ~540 MB plus ~3 GB of
# nvidia-* wheels); it runs on CPU all the same. Where the CPU-only index
# (download.pytorch.org/whl/cpu) is reachable, set
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu to get the ~200 MB build.
set -euo pipefail

venv="${CAXTON_TORCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/caxton-bench-torch}"
python="${PYTHON:-python3}"
need_gb=6

parent="$(dirname "$venv")"
mkdir -p "$parent"
free_gb=$(df -Pk "$parent" | awk 'NR == 2 { print int($4 / 1048576) }')
if [ "$free_gb" -lt "$need_gb" ]; then
    echo "make_torch_env: $parent has ${free_gb} GB free, torch with its CUDA wheels needs about ${need_gb} GB" >&2
    exit 1
fi

rm -f "$venv/.caxton-ready"
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check)
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "${pip[@]}" --index-url "$TORCH_INDEX_URL" torch
fi
"${pip[@]}" torch sentence-transformers transformers numpy
"$venv/bin/python" - <<'EOF'
import sentence_transformers, torch, transformers
print(f"torch {torch.__version__} (CUDA build: {torch.version.cuda}), "
      f"transformers {transformers.__version__}, sentence-transformers {sentence_transformers.__version__}")
EOF
touch "$venv/.caxton-ready"  # the bench uses the environment only once this exists
echo "make_torch_env: ready at $venv"
