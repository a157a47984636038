#!/usr/bin/env bash
# Fuzz the download engine's parsers (rust/fuzz-download, cargo-fuzz) on the
# stable toolchain. Usage: scripts/fuzz_download.sh [SECONDS per target, default 60]
# Needs `cargo install cargo-fuzz`. The first build compiles everything with
# a sanitizer (about 3 minutes on 2 cores); later runs reuse it.
set -euo pipefail
cd "$(dirname "$0")/../rust/fuzz-download"
secs=${1:-60}
export RUSTC_BOOTSTRAP=1  # cargo-fuzz passes nightly-only -Z flags
for target in content_range resume_state; do
    echo "==> $target for ${secs}s"
    cargo fuzz run "$target" -- -max_total_time="$secs" -max_len=4096 -rss_limit_mb=1024
done
