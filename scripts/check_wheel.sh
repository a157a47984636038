#!/usr/bin/env bash
# Builds the release abi3 wheel (manylinux2014 via zig, so the tag is useful on
# older distributions), installs it into a fresh venv with no Rust toolchain on
# PATH, and runs a smoke test. Prints the wheel's tag and size.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$PYTHON" -m venv "$work/build"
"$work/build/bin/pip" install -q maturin ziglang
# maturin finds zig through the `ziglang` package of the python on PATH.
PATH="$work/build/bin:$PATH" maturin build --release --zig --compatibility manylinux2014 \
    --interpreter "$work/build/bin/python" -o "$work/dist" -q
wheel=$(ls "$work"/dist/*.whl)
echo "wheel: $(basename "$wheel") ($(du -h "$wheel" | cut -f1))"

"$PYTHON" -m venv "$work/run"
"$work/run/bin/pip" install -q "$wheel"
mkdir -p dist && cp "$wheel" dist/
cd "$work"
# No cargo, rustc or source tree in reach: the wheel must stand alone.
env -i PATH="$work/run/bin:/usr/bin:/bin" HOME="$work" "$work/run/bin/python" - <<'PY'
import hashlib, pathlib, shutil
import caxton_models
assert shutil.which("cargo") is None and shutil.which("rustc") is None
p = pathlib.Path("smoke.bin"); p.write_bytes(b"caxton" * 1000)
assert caxton_models.sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()
print("import + hash ok:", caxton_models.__version__, caxton_models.__file__)
PY
env -i PATH="$work/run/bin:/usr/bin:/bin" HOME="$work" "$work/run/bin/caxton" --version
