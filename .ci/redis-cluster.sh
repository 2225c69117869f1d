#!/usr/bin/env bash
# Starts or stops a throwaway 3-primary Redis Cluster on loopback, for the tests of the
# Redis store (tests read SESSION_STORES_REDIS_CLUSTER_URLS).
#
#   .ci/redis-cluster.sh start   # prints the export line for SESSION_STORES_REDIS_CLUSTER_URLS
#   .ci/redis-cluster.sh stop
#   .ci/redis-cluster.sh urls    # prints the comma-separated URLs
#
# Ports: REDIS_CLUSTER_PORTS (default "7001 7002 7003"). Data lives in a temporary directory
# (no persistence: --save '' --appendonly no), removed by `stop`. `start` is idempotent: a
# cluster that is already up and healthy on those ports is left as it is.
set -euo pipefail

PORTS=(${REDIS_CLUSTER_PORTS:-7001 7002 7003})
STATE_DIR=${REDIS_CLUSTER_DIR:-${TMPDIR:-/tmp}/session-stores-redis-cluster}

urls() {
    local out=() port
    for port in "${PORTS[@]}"; do out+=("redis://127.0.0.1:${port}"); done
    (IFS=,; echo "${out[*]}")
}

cluster_ok() {
    redis-cli -h 127.0.0.1 -p "${PORTS[0]}" cluster info 2>/dev/null | grep -q '^cluster_state:ok'
}

start() {
    command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 1; }
    if cluster_ok; then
        echo "Redis Cluster already up on ports ${PORTS[*]}" >&2
        echo "export SESSION_STORES_REDIS_CLUSTER_URLS=$(urls)"
        return 0
    fi
    mkdir -p "$STATE_DIR"
    local port
    for port in "${PORTS[@]}"; do
        if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
            # A stale node from an earlier run that never formed a healthy cluster.
            redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
            sleep 0.5
        fi
        mkdir -p "$STATE_DIR/$port"
        rm -f "$STATE_DIR/$port/nodes.conf"
        redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
            --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
            --save '' --appendonly no --daemonize yes --dir "$STATE_DIR/$port" \
            --logfile "$STATE_DIR/$port/redis.log" --pidfile "$STATE_DIR/$port/redis.pid"
    done
    for port in "${PORTS[@]}"; do
        for _ in $(seq 1 50); do
            redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && break
            sleep 0.1
        done
    done
    local nodes=()
    for port in "${PORTS[@]}"; do nodes+=("127.0.0.1:${port}"); done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$STATE_DIR/create.log" 2>&1 || {
        cat "$STATE_DIR/create.log" >&2
        exit 1
    }
    for _ in $(seq 1 100); do
        if cluster_ok; then
            echo "Redis Cluster up on ports ${PORTS[*]}" >&2
            echo "export SESSION_STORES_REDIS_CLUSTER_URLS=$(urls)"
            return 0
        fi
        sleep 0.2
    done
    echo "Redis Cluster did not reach cluster_state:ok" >&2
    redis-cli -h 127.0.0.1 -p "${PORTS[0]}" cluster info >&2 || true
    exit 1
}

stop() {
    local port
    for port in "${PORTS[@]}"; do
        redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
    done
    rm -rf "$STATE_DIR"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    urls) urls ;;
    *) echo "usage: $0 start|stop|urls" >&2; exit 2 ;;
esac
