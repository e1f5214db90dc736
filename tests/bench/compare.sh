#!/usr/bin/env bash
# Starts mosquitto (MQTT QoS 1), nats-server (JetStream, file storage) and a kefu gateway
# (durable defaults: every acknowledged message is synced to disk), all on 127.0.0.1, runs the
# same publisher/subscriber pattern on each and prints one table with the ratios.
#
#   tests/bench/compare.sh                      # 10 s per run after 2 s of warm-up
#   DURATION=2 WARMUP=1 tests/bench/compare.sh  # a smoke run (CI)
#
# Env: KEFU_BIN, COMPARE_BIN (built with `cargo build --release` when unset), DURATION, WARMUP,
# SIZE (payload bytes, 100), MANY (pairs of the last row, 100), MANY_WINDOW (1).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
if [[ -z "${KEFU_BIN:-}" || -z "${COMPARE_BIN:-}" ]]; then
    (cd "$root" && cargo build --release -q -p kefu-host --bin kefu -p kefu-tests --bin compare)
fi
kefu=${KEFU_BIN:-$root/target/release/kefu}
compare=${COMPARE_BIN:-$root/target/release/compare}

work=$(mktemp -d "${TMPDIR:-/tmp}/kefu-compare.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# A loopback port nothing listens on, below the kernel's ephemeral range (client sockets, such
# as the ones a previous benchmark left in TIME_WAIT, take theirs from there).
free_port() {
    local p
    for _ in $(seq 100); do
        p=$((10000 + RANDOM % 20000))
        if ! nc -z 127.0.0.1 "$p" 2>/dev/null; then echo "$p"; return; fi
    done
    echo "no free port" >&2; exit 1
}

# wait_port NAME PORT PID LOG: waits until PORT listens; says why not if NAME's process ended or
# 30 s passed, with the end of its log.
wait_port() {
    for _ in $(seq 300); do
        if nc -z 127.0.0.1 "$2" 2>/dev/null; then return; fi
        if ! kill -0 "$3" 2>/dev/null; then
            echo "$1 exited before listening on $2; its log:" >&2; tail -20 "$4" >&2; exit 1
        fi
        sleep 0.1
    done
    echo "$1 does not listen on $2 after 30 s; its log:" >&2; tail -20 "$4" >&2; exit 1
}

mqtt_port=$(free_port)
cat > "$work/mosquitto.conf" <<CONF
listener $mqtt_port 127.0.0.1
allow_anonymous true
persistence false
set_tcp_nodelay true
max_inflight_messages 64
max_queued_messages 100000
log_dest stderr
log_type error
log_type warning
CONF
mosquitto -c "$work/mosquitto.conf" 2>"$work/mosquitto.log" & pids+=($!); mqtt_pid=$!

nats_port=$(free_port)
mkdir -p "$work/nats"
nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$work/nats" >"$work/nats.log" 2>&1 & pids+=($!); nats_pid=$!

"$kefu" gateway --data "$work/kefu" --http 127.0.0.1:0 --tcp 127.0.0.1:0 --rate 0 --log warn \
    >"$work/kefu.out" & pids+=($!); kefu_pid=$!
for _ in $(seq 100); do
    grep -q "listening" "$work/kefu.out" 2>/dev/null && break
    sleep 0.1
done
kefu_tcp=$(grep -o 'tcp=[^ ]*' "$work/kefu.out" | cut -d= -f2)
[[ -n "$kefu_tcp" ]] || { echo "the kefu gateway did not start" >&2; exit 1; }
wait_port mosquitto "$mqtt_port" "$mqtt_pid" "$work/mosquitto.log"
wait_port nats-server "$nats_port" "$nats_pid" "$work/nats.log"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "versions: $("$kefu" --version), mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}'), nats-server $(nats-server --version | awk '{print $2}')"
"$compare" \
    --kefu "$kefu_tcp" --kefu-pid "$kefu_pid" \
    --mqtt "127.0.0.1:$mqtt_port" --mqtt-pid "$mqtt_pid" \
    --nats "127.0.0.1:$nats_port" --nats-pid "$nats_pid" \
    --duration "${DURATION:-10}" --warmup "${WARMUP:-2}" --size "${SIZE:-100}" \
    --many "${MANY:-100}" --many-window "${MANY_WINDOW:-1}"
