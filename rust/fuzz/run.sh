#!/usr/bin/env bash
# Fuzz the safetensors header validator and the ONNX protobuf walk
# (rust/src/safetensors.rs, rust/src/onnx.rs): rust/fuzz/run.sh [SECONDS] runs each
# target for SECONDS (default 30) and exits non-zero on the first crash
# (the input is left in rust/fuzz/artifacts/<target>/).
#
# Only the stable toolchain is needed: cargo-fuzz passes nightly-only flags
# (-Zsanitizer=address, -Cpasses=sancov-module ...), which stable rustc accepts
# under RUSTC_BOOTSTRAP=1; the ASan runtime ships with stable's rust-std.
set -euo pipefail

secs=${1:-30}
here=$(cd "$(dirname "$0")" && pwd)
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz (about a minute)" >&2
    cargo install cargo-fuzz --locked
fi

cd "$here"
seed() { # a valid file, so mutation starts from something the parser accepts
    local header='{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[1,2],"data_offsets":[8,12]}}'
    mkdir -p "corpus/$1"
    case "$1" in
    safetensors_bytes)
        python3 -c 'import struct,sys; h=sys.argv[1].encode(); sys.stdout.buffer.write(struct.pack("<Q",len(h))+h+bytes(12))' \
            "$header" >"corpus/$1/seed" ;;
    safetensors_*)
        { printf '\x0c'; printf '%s' "$header"; } >"corpus/$1/seed" ;;
    onnx_*) # a ModelProto with external tensors in a graph, an If branch and a sparse initializer
        python3 - >"corpus/$1/seed" <<'PY'
import sys
def v(n):
    o = bytearray()
    while True:
        b, n = n & 127, n >> 7
        o.append(b | (128 if n else 0))
        if not n:
            return bytes(o)
def f(n, p):
    return v(n << 3) + v(p) if isinstance(p, int) else v(n << 3 | 2) + v(len(p)) + p
def t(name, loc, off, ln):
    kv = ((b"location", loc), (b"offset", off), (b"length", ln))
    return f(1, 4) + f(2, 1) + f(8, name) + b"".join(f(13, f(1, k) + f(2, x)) for k, x in kv) + f(14, 1)
sub = f(5, t(b"b", b"w.bin", b"16", b"16"))
node = f(4, b"If") + f(5, f(1, b"then_branch") + f(6, sub))
graph = f(1, node) + f(5, t(b"w", b"w.bin", b"0", b"16")) + f(15, f(1, t(b"v", b"s.bin", b"0", b"8")))
sys.stdout.buffer.write(f(1, 8) + f(7, graph) + f(8, f(2, 17)))
PY
        ;;
    esac
}

for target in $(cargo fuzz list --fuzz-dir "$here"); do
    [ -e "corpus/$target/seed" ] || seed "$target"
    echo "== $target for ${secs}s" >&2
    # FUZZ_SANITIZER=none (the test command's quick run) skips ASan: a much
    # shorter build, and safe Rust still shows its bugs as panics.
    cargo fuzz run --fuzz-dir "$here" --sanitizer "${FUZZ_SANITIZER:-address}" \
        "$target" "corpus/$target" -- \
        -max_total_time="$secs" -dict="$here/${target%%_*}.dict" -max_len=4096 \
        -rss_limit_mb=2048 -print_final_stats=1
done
