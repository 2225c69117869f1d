#!/usr/bin/env bash
# Runs every bench (each backend against its raw client, in one run per backend) and writes
# BENCHMARKS.md. Quick by default (minutes on 2 cores); `--long` measures longer for tighter
# figures. Postgres and Redis benches find their servers as the tests do
# (SESSION_STORES_POSTGRES_URL, SESSION_STORES_REDIS_URL) and skip loudly when absent.
#
#   benches/report.sh [--long] [--runs N]
#
# --runs N (default 2) runs the whole set N times, one run after the other, so that a
# disturbance on this noisy VM shows as a spread instead of passing for a result; report.py
# then gives each time as the median of the runs' and each ratio with its spread.
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
runs=2
while [ $# -gt 0 ]; do
    case "$1" in
        --long) args=(--warm-up-time 2 --measurement-time 5 --sample-size 30) ;;
        --runs) runs="$2"; shift ;;
        *) echo "usage: benches/report.sh [--long] [--runs N]" >&2; exit 2 ;;
    esac
    shift
done
target="${CARGO_TARGET_DIR:-target}"
rm -rf "$target/criterion" "$target/criterion-runs"
benches=(memory footprint)
for bench in file sqlite postgres mysql redis wrappers owners; do
    [ -f "benches/$bench.rs" ] && benches+=("$bench")
done
cargo bench --all-features --no-run
if [ -f benches/peers/Cargo.toml ]; then
    cargo bench --manifest-path benches/peers/Cargo.toml --no-run
fi
for run in $(seq 1 "$runs"); do
echo "=== run $run of $runs ($(date -u +%H:%M:%S))"
rm -rf "$target/criterion"
for bench in "${benches[@]}"; do
    echo "=== bench $bench ($(date -u +%H:%M:%S))"
    cargo bench --all-features --bench "$bench" -- "${args[@]}"
done
# Against the peers (the tower-sessions family): memory, Postgres and Redis in the
# benches/peers crate, ours and the peers one after the other in each phase; our SQLite store
# (benches/peers_sqlite.rs, which cannot share a build with sqlx's SQLite) alternated with the
# peer's phase by phase. Both write their results and peers-failures.json under $target.
if [ -f benches/peers/Cargo.toml ]; then
    criterion_home="$(mkdir -p "$target" && cd "$target" && pwd)/criterion"
    peers=(cargo bench --manifest-path benches/peers/Cargo.toml)
    for phase in create load update delete; do
        echo "=== bench peers sqlite $phase ($(date -u +%H:%M:%S))"
        cargo bench --all-features --bench peers_sqlite -- "${args[@]}" "^peers-sqlite/$phase/"
        CRITERION_HOME="$criterion_home" "${peers[@]}" -- "${args[@]}" "^peers-sqlite/$phase/"
    done
    echo "=== bench peers memory, postgres, mysql, redis ($(date -u +%H:%M:%S))"
    CRITERION_HOME="$criterion_home" "${peers[@]}" -- "${args[@]}" '^peers-(memory|postgres|mysql|redis)/'
fi
mkdir -p "$target/criterion-runs"
mv "$target/criterion" "$target/criterion-runs/$run"
done
python3 benches/report.py "$target" BENCHMARKS.md
