#!/usr/bin/env bash
# Runs each backend's whole conformance suite N times in a row (default 20) and reports, per
# backend, how many runs passed and how long one whole-suite run took (min / median / max).
# Needs the services .ci/run starts (Postgres, Redis, a Redis Cluster). Not part of CI: it
# takes a few minutes. Usage: bash .ci/stability.sh [N [TEST...]]
# BUSY=k starts k busy loops (one core each) for the whole run, to check the tests under load:
#   BUSY=2 bash .ci/stability.sh 20 conformance::wrappers::redis_cluster_under_every_layering
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${1:-20}"
shift || true
eval "$(bash .ci/redis-cluster.sh start)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME:-/root}/.cache/session-stores-target}"
cargo test --all-features --test it --no-run -q 2>/dev/null
bin="$(cargo test --all-features --test it --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*/it-[^"]*"' | head -n1 | cut -d'"' -f4)"
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(
    conformance::memory::whole_suite_on_a_sharded_store
    conformance::memory::whole_suite_with_a_byte_budget
    conformance::file::whole_suite_without_cache
    conformance::file::whole_suite_durable
    conformance::sqlite::whole_suite_on_one_file_with_a_table_per_store
    conformance::sqlite::whole_suite_without_wal_or_readers
    conformance::postgres::whole_suite
    conformance::postgres::whole_suite_with_own_pools
    conformance::redis::standalone_whole_suite
    conformance::redis::standalone_from_pool_whole_suite
    conformance::redis::cluster_whole_suite
    conformance::wrappers::memory_under_every_layering
    conformance::wrappers::sqlite_under_every_layering
    conformance::wrappers::postgres_under_every_layering
    conformance::wrappers::redis_cluster_under_every_layering
)
busy=()
for _ in $(seq 1 "${BUSY:-0}"); do
    (while :; do :; done) &
    busy+=("$!")
done
trap '[ ${#busy[@]} -eq 0 ] || kill "${busy[@]}" 2>/dev/null' EXIT
[ "${BUSY:-0}" -eq 0 ] || echo "with ${BUSY} busy loops on $(nproc) cores"
printf '%-55s %7s %8s %8s %8s\n' test passed min_s median_s max_s
for t in "${tests[@]}"; do
    pass=0; times=()
    for _ in $(seq 1 "$runs"); do
        start=$(date +%s.%N)
        if "$bin" --exact "$t" --test-threads=1 >/tmp/stability.log 2>&1 \
            && grep -q '1 passed' /tmp/stability.log; then
            pass=$((pass + 1))
        else
            echo "FAILED: $t"; grep -E 'failed|panicked' /tmp/stability.log | head -5
        fi
        times+=("$(echo "$(date +%s.%N) - $start" | bc)")
    done
    sorted=($(printf '%s\n' "${times[@]}" | sort -n))
    printf '%-55s %4d/%-3d %8.2f %8.2f %8.2f\n' "$t" "$pass" "$runs" "${sorted[0]}" \
        "${sorted[$((runs / 2))]}" "${sorted[$((runs - 1))]}"
done
