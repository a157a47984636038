#!/usr/bin/env bash
# The README's test command: installs the test dependencies into .venv, builds
# the extension, and runs every check. Any failure, or a run in which no test
# executed, exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
step() { printf '\n==> %s (%s, %ds in)\n' "$*" "$(date -u +%H:%M:%S)" "$SECONDS"; }

step "Python environment (.venv)"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q -U pip
# The `ci` cargo profile is release without fat LTO: optimised code, a much
# shorter build than the wheel's profile.
MATURIN_PEP517_ARGS="--profile ci" python -m pip install -q -e '.[test]'
# huggingface_hub 2.x beside the 1.x above, for the mirror's client test
# (tests/ops/test_serve_revisions.py runs it in a subprocess on this path). pip's
# note that fastembed wants huggingface_hub<2 is about .venv, which keeps 1.x.
python -m pip install -q --upgrade --target .cache/hfhub2 'huggingface_hub>=2,<3'

step "Rust: fmt, clippy, tests"
command -v rustup >/dev/null && rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo clippy --all-targets --features python -- -D warnings
# The `ci` profile: the dependencies maturin just built are reused (a debug
# build of them all cost about 3 of CI's 30 minutes).
cargo test --profile ci --quiet

step "Rust: a short cargo-fuzz run of every fuzz target (stable toolchain, no sanitizer)"
# The safetensors header, the ONNX protobuf walk and the download engine's
# Content-Range and resume state parsers. Longer, with ASan: rust/fuzz/run.sh
# 600; scripts/fuzz_download.sh 600.
fuzzlog="$PWD/target/fuzz.log"
mkdir -p target
fuzz_secs="${CAXTON_FUZZ_SECONDS:-5}"
if ! { CARGO_TARGET_DIR="$PWD/target/fuzz" FUZZ_SANITIZER=none bash rust/fuzz/run.sh "$fuzz_secs" &&
       CARGO_TARGET_DIR="$PWD/target/fuzz" FUZZ_SANITIZER=none bash scripts/fuzz_download.sh "$fuzz_secs"
     } >"$fuzzlog" 2>&1; then
    tail -60 "$fuzzlog"
    echo "fuzzing failed: the crashing input is under rust/fuzz*/artifacts/" >&2
    exit 1
fi
grep -E '^(==|Done )' "$fuzzlog" || true

step "Python: ruff, mypy, stubtest"
ruff check python tests benches scripts
ruff format --check python tests benches scripts
mypy
lint-imports  # the layers and no-cycle contracts in pyproject.toml [tool.importlinter]
python -m mypy.stubtest caxton_models._core --ignore-missing-stub

step "Workflows: actionlint"
actionlint .github/workflows/*.yml

step "pytest: tests/ and a smoke run of benches/ (benchmarks disabled)"
python -m pytest tests benches -q -p no:cacheprovider -n "${CAXTON_TEST_WORKERS:-2}" --durations=15 "$@"
