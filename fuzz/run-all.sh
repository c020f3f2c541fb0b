#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds each (default 20) and fails on the first
# crash. New inputs go to work/<target> (ignored by git); the committed seeds in
# corpus/<target> are read, not written. A crash leaves its input in
# artifacts/<target>/: copy it to regressions/<target>/ once fixed, so that
# `cargo test -p h2rev2-proto --test fuzz_corpus` replays it for ever.
#
#   fuzz/run-all.sh 60               # address sanitizer (needs RUSTC_BOOTSTRAP on stable)
#   SANITIZER=none fuzz/run-all.sh   # fallback if the sanitizer build fails
set -euo pipefail
secs="${1:-20}"
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP="${RUSTC_BOOTSTRAP:-1}"
sanitizer="${SANITIZER:-address}"
command -v cargo-fuzz >/dev/null || { echo "cargo install cargo-fuzz first" >&2; exit 2; }
for t in $(cargo fuzz list); do
    mkdir -p "work/$t"
    echo "== $t: ${secs}s"
    if ! cargo fuzz run --sanitizer "$sanitizer" -O "$t" "work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 >"work/$t.log" 2>&1; then
        tail -n 60 "work/$t.log"
        echo "!! $t failed; input in fuzz/artifacts/$t/, log in fuzz/work/$t.log" >&2
        exit 1
    fi
    grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)|cov: .*corp:" "work/$t.log" | tail -n 4
done
echo "all targets ran ${secs}s without a crash"
