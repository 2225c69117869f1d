#!/usr/bin/env bash
# Runs every bench (each backend against its raw client, in one run per backend) and writes
# BENCHMARKS.md. Quick by default (minutes on 2 cores); `--long` measures longer for tighter
# figures. Postgres and Redis benches find their servers as the tests do
# (SESSION_STORES_POSTGRES_URL, SESSION_STORES_REDIS_URL) and skip loudly when absent.
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
if [ "${1:-}" = "--long" ]; then
    args=(--warm-up-time 2 --measurement-time 5 --sample-size 30)
fi
target="${CARGO_TARGET_DIR:-target}"
rm -rf "$target/criterion"
benches=(memory footprint)
for bench in file sqlite postgres redis; do
    [ -f "benches/$bench.rs" ] && benches+=("$bench")
done
cargo bench --all-features --no-run
for bench in "${benches[@]}"; do
    echo "=== bench $bench ($(date -u +%H:%M:%S))"
    cargo bench --all-features --bench "$bench" -- "${args[@]}"
done
python3 benches/report.py "$target" BENCHMARKS.md
