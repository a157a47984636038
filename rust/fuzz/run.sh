#!/usr/bin/env bash
# Fuzz the safetensors header validator: rust/fuzz/run.sh [SECONDS] runs each
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
    if [ "$1" = safetensors_bytes ]; then
        python3 -c 'import struct,sys; h=sys.argv[1].encode(); sys.stdout.buffer.write(struct.pack("<Q",len(h))+h+bytes(12))' \
            "$header" >"corpus/$1/seed"
    else
        { printf '\x0c'; printf '%s' "$header"; } >"corpus/$1/seed"
    fi
}

for target in $(cargo fuzz list --fuzz-dir "$here"); do
    [ -e "corpus/$target/seed" ] || seed "$target"
    echo "== $target for ${secs}s" >&2
    # FUZZ_SANITIZER=none (the test command's quick run) skips ASan: a much
    # shorter build, and safe Rust still shows its bugs as panics.
    cargo fuzz run --fuzz-dir "$here" --sanitizer "${FUZZ_SANITIZER:-address}" \
        "$target" "corpus/$target" -- \
        -max_total_time="$secs" -dict="$here/safetensors.dict" -max_len=4096 \
        -rss_limit_mb=2048 -print_final_stats=1
done
