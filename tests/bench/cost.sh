#!/usr/bin/env bash
# What one message costs the gateway, two ways, on 127.0.0.1:
#
#   tests/bench/cost.sh threads [kefu bench args]   # CPU time per stored message, per thread kind
#   tests/bench/cost.sh callgrind                   # user-space instructions per message
#
# `threads` starts a gateway (after its accounts are made and logged in once, so password
# hashing is not counted), reads every thread's CPU time from /proc before and after one
# `kefu bench` run (default: --pairs 100 --window 1 --duration 5 --warmup 1) and divides by the
# messages stored meanwhile. CPU time moves less with the machine's load than throughput does.
#
# `callgrind` runs the gateway under valgrind while `kefu bench --pairs 4 --window 16 --rate 400`
# drives it: the instruction count between two moments once traffic flows, over the messages
# stored between them. It does not depend on the load at all (but counts no kernel time).
#
# The gateway listens on ports the system picks (read back from its "listening" line).
# Env: KEFU_BIN (built with `cargo build --release` when unset).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
if [[ -z "${KEFU_BIN:-}" ]]; then
    (cd "$root" && cargo build --release -q -p kefu-host --bin kefu)
fi
kefu=${KEFU_BIN:-$root/target/release/kefu}
mode=${1:-threads}
shift || true

work=$(mktemp -d "${TMPDIR:-/tmp}/kefu-cost.XXXXXX")
gw=
cleanup() {
    [[ -n "$gw" ]] && kill "$gw" 2>/dev/null && wait "$gw" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

stored() { curl -s "http://$http/metrics" | awk '/^kefu_messages_stored_total/ {print $2}'; }
# Waits for the gateway's "kefu gateway listening: http=A tcp=B" line; sets $http and $tcp.
wait_up() {
    for _ in $(seq 240); do
        line=$(grep -m1 '^kefu gateway listening:' "$work/gateway.log" || true)
        if [[ -n "$line" ]]; then
            http=$(sed -E 's/.* http=([^ ]+).*/\1/' <<<"$line")
            tcp=$(sed -E 's/.* tcp=([^ ]+).*/\1/' <<<"$line")
            return 0
        fi
        kill -0 "$gw" 2>/dev/null || break
        sleep 0.5
    done
    echo "the gateway did not come up; its log:" >&2
    cat "$work/gateway.log" >&2
    return 1
}
# Every thread's CPU ticks (user + system), summed per thread name.
thread_ticks() {
    for t in /proc/"$1"/task/*; do
        echo "$(tr ' ' _ <"$t/comm") $(awk '{print $14 + $15}' "$t/stat")"
    done | awk '{a[$1] += $2} END {for (k in a) print k, a[k]}' | sort
}

gateway_args=(gateway --data "$work/data" --http 127.0.0.1:0 --tcp 127.0.0.1:0 --rate 0 --log warn)
case "$mode" in
threads)
    "$kefu" "${gateway_args[@]}" >"$work/gateway.log" 2>&1 &
    gw=$!
    wait_up
    [[ $# -gt 0 ]] || set -- --pairs 100 --window 1 --duration 5 --warmup 1
    # The same accounts log in again in the measured run: their hashes are made here.
    pairs=1
    args=("$@")
    for i in "${!args[@]}"; do
        [[ "${args[$i]}" == --pairs ]] && pairs=${args[$((i + 1))]}
    done
    "$kefu" bench --tcp "$tcp" --pairs "$pairs" --duration 1 --warmup 0 >/dev/null
    before=$(stored)
    thread_ticks "$gw" >"$work/before"
    "$kefu" bench --tcp "$tcp" --pid "$gw" "$@"
    thread_ticks "$gw" >"$work/after"
    n=$(($(stored) - before))
    hz=$(getconf CLK_TCK)
    echo "gateway CPU per stored message ($n messages, load average $(cut -d' ' -f1-3 /proc/loadavg)):"
    join "$work/before" "$work/after" | awk -v n="$n" -v hz="$hz" '
        { us = ($3 - $2) * 1e6 / hz / n; total += us; if (us >= 0.05) printf "  %-16s %6.1f us\n", $1, us }
        END { printf "  %-16s %6.1f us\n", "total", total }'
    ;;
callgrind)
    command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
    (cd "$work" && exec valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p" \
        "$kefu" "${gateway_args[@]}") >"$work/gateway.log" 2>&1 &
    gw=$!
    wait_up
    "$kefu" bench --tcp "$tcp" --pairs 4 --window 16 --rate 400 --duration 14 --warmup 4 \
        >"$work/bench.log" 2>&1 &
    bench=$!
    sleep 8
    callgrind_control -z "$gw" >/dev/null 2>&1
    before=$(stored)
    sleep 8
    n=$(($(stored) - before))
    callgrind_control -d "$gw" >/dev/null 2>&1
    sleep 1
    wait "$bench" || { cat "$work/bench.log" >&2; exit 1; }
    dump=$(ls -t "$work"/cg.* | head -1)
    ir=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    echo "gateway: $ir instructions for $n messages: $((ir / n)) per message"
    ;;
*)
    echo "usage: $0 threads [kefu bench args] | callgrind" >&2
    exit 2
    ;;
esac
