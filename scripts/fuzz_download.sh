#!/usr/bin/env bash
# Fuzz the download engine's parsers (rust/fuzz-download, cargo-fuzz) on the
# stable toolchain. Usage: scripts/fuzz_download.sh [SECONDS per target, default 60]
# Needs `cargo install cargo-fuzz`. The first build compiles everything with
# a sanitizer (3 to 10 minutes on a shared 2-core machine); later runs reuse it.
# The test command runs it briefly with FUZZ_SANITIZER=none (a much shorter
# build; safe Rust still shows its bugs as panics).
set -euo pipefail
cd "$(dirname "$0")/../rust"
secs=${1:-60}
export RUSTC_BOOTSTRAP=1  # cargo-fuzz passes nightly-only -Z flags
for target in content_range resume_state; do
    echo "==> $target for ${secs}s"
    cargo fuzz run --fuzz-dir fuzz-download --sanitizer "${FUZZ_SANITIZER:-address}" "$target" -- \
        -max_total_time="$secs" -max_len=4096 -rss_limit_mb=1024
done
