#!/usr/bin/env bash
# run-demo.sh — the emulated counter terminal against a real gateway, all on loopback.
#
#   1. builds the `kefu` binary of the root workspace (or uses $KEFU_BIN),
#   2. creates a temporary data folder and a device account (`kefu device add`) for its token,
#   3. starts a gateway on 127.0.0.1 (HTTP and TCP on free ports),
#   4. builds this firmware with the token and the gateway's port baked in (build.rs reads
#      KEFU_TOKEN / KEFU_GATEWAY_PORT / KEFU_DEVICE),
#   5. boots it in QEMU (mps2-an386) with user-mode networking restricted to the guest
#      (`restrict=on`): the only way out is the guestfwd rule 10.0.2.100:PORT -> 127.0.0.1:PORT,
#   6. checks that the firmware got its DHCP lease, moved a bulk stream each way intact (driver
#      under full-size frames), connected, completed `hi` and `login`, and
#      exited with code 0. With FWD=socat (the default when socat is installed) the firmware
#      holds its connection after each login and the script goes on:
#      0. types a line on the terminal's serial port (UART0, a unix socket) and checks the
#         firmware read it;
#      a. pulls the virtual cable (QMP `set_link n0 false`), checks the firmware saw the link go
#         down (PHY interrupt), plugs it back in, and checks it got a lease again, reconnected
#         and logged in (round 2);
#      b. stops the gateway (SIGTERM), checks the firmware saw the close and retries, starts the
#         gateway again on the same port, and checks it reconnected and logged in (round 3).
# Any step that does not happen stops the script with a message naming it and a non-zero exit.
#
# Today the firmware runs the board's own probe (hi + login). When the kefu-firmware app is
# spawned in src/main.rs, extend step 6 (see "CHECKS" below) with the full scenario.
#
# Environment:
#   KEFU_BIN        use this kefu binary instead of building the root workspace's
#   CARGO_TARGET_DIR  target folder for the firmware build (default: ./target here)
#   QEMU_TIMEOUT    seconds the emulation may run (default 90)
#   BULK_BYTES      length of the bulk self-test in each direction (default 262144; 0 = off)
#   KEEP=1          keep the temporary folder (gateway data and logs); a failed run keeps it anyway
#   FWD=socat|nc|tcp  guestfwd kind:
#                   socat (default when installed): `socat -lf /dev/null STDIO TCP:127.0.0.1:PORT` per guest
#                     connection (its stderr also goes to the guest: hence -lf); closes travel both ways (the gateway's close reaches the guest as
#                     a FIN), so the gateway can restart and the guest reconnect. Enables the
#                     restart check.
#                   nc: `nc 127.0.0.1 PORT` per guest connection. netcat-openbsd does not exit
#                     when the gateway closes while the guest side is open, so the guest never
#                     sees that close: fine for reconnects after the guest gives up, not for the
#                     restart check (which is skipped).
#                   tcp: QEMU connects once, at start; one connection only.
#
# Needs (Debian): rustc-web rust-web-src cargo-web binutils-arm-none-eabi qemu-system-arm socat
#                 (netcat-openbsd only for FWD=nc)
set -euo pipefail

BOARD_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BOARD_DIR/../../.." && pwd)
QEMU_TIMEOUT=${QEMU_TIMEOUT:-90}
DEVICE=${KEFU_DEVICE:-counter-01}

step() { printf '\n== %s\n' "$*"; }
PASSES=0
ok() {
    echo "ok: $1"
    PASSES=$((PASSES + 1))
}
fail() {
    printf '\nrun-demo: FAILED: %s\n' "$*" >&2
    if [[ -n ${WORK:-} && -f $WORK/qemu.log ]]; then
        printf -- '--- firmware output (%s) ---\n' "$WORK/qemu.log" >&2
        tail -n 40 "$WORK/qemu.log" >&2 || true
    fi
    if [[ -n ${WORK:-} && -f $WORK/gateway.log ]]; then
        printf -- '--- gateway log (%s) ---\n' "$WORK/gateway.log" >&2
        tail -n 20 "$WORK/gateway.log" >&2 || true
    fi
    [[ -n ${WORK:-} ]] && KEEP=1 # keep the logs of a failed run
    printf 'run-demo: %d passed, 1 failed\n' "$PASSES" >&2
    exit 1
}

for tool in qemu-system-arm arm-none-eabi-ld arm-none-eabi-size /usr/bin/rustc cargo; do
    command -v "$tool" >/dev/null || fail "missing tool '$tool' (apt-get install rustc-web rust-web-src cargo-web binutils-arm-none-eabi qemu-system-arm)"
done
[[ -d /usr/lib/rustlib/src/rust/library/core ]] || fail "missing the standard library source (apt-get install rust-web-src)"
FWD=${FWD:-$(command -v socat >/dev/null && echo socat || echo tcp)}

WORK=$(mktemp -d /tmp/kefu-demo.XXXXXX)
GW_PID=
QEMU_PID=
cleanup() {
    if [[ -n $QEMU_PID ]] && kill -0 "$QEMU_PID" 2>/dev/null; then
        kill "$QEMU_PID" 2>/dev/null || true
        wait "$QEMU_PID" 2>/dev/null || true
    fi
    if [[ -n $GW_PID ]] && kill -0 "$GW_PID" 2>/dev/null; then
        kill "$GW_PID" 2>/dev/null || true
        wait "$GW_PID" 2>/dev/null || true
    fi
    if [[ ${KEEP:-0} == 1 ]]; then echo "run-demo: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

step "1. kefu binary"
if [[ -n ${KEFU_BIN:-} ]]; then
    KEFU=$KEFU_BIN
else
    (cd "$ROOT" && cargo build -q -p kefu-host --bin kefu) || fail "building the kefu binary"
    KEFU=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/debug/kefu
fi
[[ -x $KEFU ]] || fail "no kefu binary at $KEFU"
echo "using $KEFU"

step "2. device account '$DEVICE'"
TOKEN=$("$KEFU" device add "$DEVICE" --data "$WORK/data" 2>"$WORK/device.log" | tail -n 1) ||
    fail "kefu device add (see $WORK/device.log)"
[[ $TOKEN =~ ^[A-Za-z0-9_-]+$ ]] || fail "kefu device add printed no token: '$TOKEN'"
echo "token: ${TOKEN:0:12}… (${#TOKEN} chars)"

# Starts the gateway on 127.0.0.1:$1 (0: a free port) with the demo's data folder; sets GW_PID,
# and PORT once the gateway says where it listens.
start_gateway() {
    : >"$WORK/gateway.out" # exists before the background job opens it
    "$KEFU" gateway --data "$WORK/data" --http 127.0.0.1:0 --tcp "127.0.0.1:$1" \
        >"$WORK/gateway.out" 2>>"$WORK/gateway.log" &
    GW_PID=$!
    PORT=
    for _ in $(seq 1 100); do
        PORT=$(sed -n 's/^kefu gateway listening: .*tcp=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/gateway.out")
        [[ -n $PORT ]] && break
        kill -0 "$GW_PID" 2>/dev/null || fail "the gateway exited at start"
        sleep 0.1
    done
    [[ -n $PORT ]] || fail "the gateway did not say where it listens within 10 s"
    echo "gateway pid $GW_PID, framed TCP on 127.0.0.1:$PORT"
}
# Stops the gateway (SIGTERM: it tells its sessions 503 and closes them) and waits for it.
stop_gateway() {
    kill "$GW_PID"
    wait "$GW_PID" 2>/dev/null || true
}

step "3. gateway on 127.0.0.1"
start_gateway 0

step "4. firmware build (token and port baked in)"
# With socat the firmware can see closes and reconnect: three rounds (link loss, then a gateway
# restart, each followed by a reconnect); otherwise one round.
SCENARIO=0
[[ $FWD == socat ]] && SCENARIO=1
ROUNDS=$((SCENARIO ? 3 : 1))
# Bulk self-test first: the guest reads BULK_BYTES from `yes kefu-bulk` (guest port 9000) and
# writes as many to `dd of=$WORK/bulk-tx.bin` (guest port 9001). Host side: commands, no ports.
BULK_BYTES=${BULK_BYTES:-262144}
export RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$BOARD_DIR/target}
(cd "$BOARD_DIR" && KEFU_TOKEN=$TOKEN KEFU_GATEWAY_PORT=$PORT KEFU_DEVICE=$DEVICE \
    KEFU_PROBE_ROUNDS=$ROUNDS KEFU_BULK_BYTES=$BULK_BYTES KEFU_BULK_PORT=9000 \
    cargo build --release) || fail "building the firmware"
ELF=$CARGO_TARGET_DIR/thumbv7em-none-eabihf/release/kefu-board-mps2-an386
arm-none-eabi-size "$ELF"
# The issue's budget for the whole app: flash (text + data) <= 96 KiB, RAM (data + bss) <= 48 KiB.
read -r TEXT DATA BSS _ < <(arm-none-eabi-size "$ELF" | tail -n 1)
FLASH=$((TEXT + DATA)) RAM=$((DATA + BSS))
echo "flash $FLASH bytes (budget 98304), static RAM $RAM bytes (budget 49152)"
((FLASH <= 98304)) || fail "flash $FLASH bytes is over the 96 KiB budget"
((RAM <= 49152)) || fail "static RAM $RAM bytes is over the 48 KiB budget"
ok "size within the budget"

step "5. QEMU mps2-an386 (guest network restricted; guestfwd=$FWD to 127.0.0.1:$PORT)"
case $FWD in
    socat) GUESTFWD="guestfwd=tcp:10.0.2.100:$PORT-cmd:socat -lf /dev/null STDIO TCP:127.0.0.1:$PORT" ;;
    nc) GUESTFWD="guestfwd=tcp:10.0.2.100:$PORT-cmd:nc 127.0.0.1 $PORT" ;;
    tcp) GUESTFWD="guestfwd=tcp:10.0.2.100:$PORT-tcp:127.0.0.1:$PORT" ;;
    *) fail "FWD must be socat, nc or tcp, not '$FWD'" ;;
esac
: >"$WORK/qemu.log"
# QMP (a unix socket in $WORK) lets the script pull the virtual cable.
# UART0 (the terminal's keyboard) is a unix socket in $WORK as well.
timeout "$QEMU_TIMEOUT" qemu-system-arm -M mps2-an386 -display none -monitor none \
    -serial "unix:$WORK/uart.sock,server=on,wait=off" \
    -semihosting-config enable=on,target=native -kernel "$ELF" \
    -netdev "user,id=n0,restrict=on,$GUESTFWD,guestfwd=tcp:10.0.2.100:9000-cmd:yes kefu-bulk,guestfwd=tcp:10.0.2.100:9001-cmd:dd of=$WORK/bulk-tx.bin status=none" \
    -net nic,model=lan9118,netdev=n0 \
    -qmp "unix:$WORK/qmp.sock,server=on,wait=off" \
    >"$WORK/qemu.log" 2>&1 &
QEMU_PID=$!
tail -n +1 -f --pid="$QEMU_PID" "$WORK/qemu.log" &

# Waits until the firmware printed $1 at least $2 times (or QEMU ended, or $3 seconds passed).
wait_for() {
    for _ in $(seq 1 $(($3 * 10))); do
        [[ $(grep -c -- "$1" "$WORK/qemu.log") -ge $2 ]] && return 0
        kill -0 "$QEMU_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
# Sets the emulated Ethernet link up (true) or down (false) through QMP.
set_link() {
    local reply
    reply=$(printf '{"execute":"qmp_capabilities"}\n{"execute":"set_link","arguments":{"name":"n0","up":%s}}\n' "$1" |
        socat -t 1 - "UNIX-CONNECT:$WORK/qmp.sock" | tail -n 1)
    [[ $reply == *'"return"'* ]] || fail "QMP set_link $1 answered: $reply"
}

if [[ $SCENARIO == 1 ]]; then
    wait_for "kefu-board: holding the connection" 1 30 ||
        fail "the firmware did not log in and hold its connection (round 1)"
    echo "run-demo: typing a line on the terminal's serial port"
    printf 'reply from counter 1\r\n' | socat -t 1 - "UNIX-CONNECT:$WORK/uart.sock" ||
        fail "could not reach the serial port socket"
    wait_for "kefu-board: uart line: reply from counter 1" 1 10 ||
        fail "the firmware did not read the line from its serial port"
    echo "run-demo: pulling the virtual cable (QMP set_link n0 down)"
    set_link false
    wait_for "kefu-board: link down" 1 10 || fail "the firmware did not see the link go down"
    sleep 2
    echo "run-demo: plugging it back in (QMP set_link n0 up)"
    set_link true
    wait_for "kefu-board: holding the connection" 2 40 ||
        fail "the firmware did not reconnect and log in after the link came back (round 2)"
    echo "run-demo: stopping the gateway (SIGTERM)"
    stop_gateway
    wait_for "kefu-board: gateway closed the connection" 1 20 ||
        fail "the firmware did not see the gateway close its connection"
    wait_for "kefu-board: round 3: .*retrying" 1 20 ||
        fail "the firmware did not retry while the gateway was away"
    echo "run-demo: starting the gateway again on 127.0.0.1:$PORT"
    start_gateway "$PORT"
fi
set +e
wait "$QEMU_PID"
QEMU_RC=$?
set -e
sleep 0.2 # let tail print the last lines

step "6. checks"
# CHECKS: each line the firmware must have printed, in order of the scenario.
expect() {
    grep -q -- "$1" "$WORK/qemu.log" || fail "$2 (no '$1' in the firmware output)"
    ok "$2"
}
expect "kefu-board: lan9118 id" "Ethernet controller found and reset"
expect "kefu-board: dhcp address" "DHCP lease from QEMU"
if ((BULK_BYTES > 0)); then
    expect "kefu-board: bulk rx $BULK_BYTES bytes ok" "bulk receive: $BULK_BYTES bytes, every byte checked"
    head -c "$BULK_BYTES" < <(yes kefu-bulk) | cmp -s - "$WORK/bulk-tx.bin" ||
        fail "bulk send: $WORK/bulk-tx.bin is not the $BULK_BYTES bytes the firmware sent"
    ok "bulk send: $BULK_BYTES bytes arrived intact"
fi
expect "kefu-board: tcp connected" "TCP connection to the gateway through guestfwd"
expect "kefu-board: hi ok" "hi answered by the gateway"
expect "kefu-board: login ok" "login with the device token"
expect "kefu-board: round 1 done" "first round complete"
if [[ $SCENARIO == 1 ]]; then
    expect "kefu-board: uart line: reply from counter 1" "a line typed on the serial port (UART0) read"
    expect "kefu-board: link down" "link loss seen through the PHY interrupt"
    expect "kefu-board: round 2 done" "reconnected, hi and login again after the link came back"
    expect "kefu-board: gateway closed the connection" "gateway shutdown seen by the firmware"
    expect "kefu-board: round 3 done" "reconnected, hi and login again after the gateway restart"
fi
[[ $QEMU_RC == 124 ]] && fail "QEMU still running after ${QEMU_TIMEOUT} s"
[[ $QEMU_RC == 0 ]] || fail "firmware exited with code $QEMU_RC"
ok "firmware exited with code 0"
echo
if [[ $SCENARIO == 1 ]]; then
    echo "run-demo: PASSED (hi + login; link down/up and reconnect; gateway restart and reconnect; QEMU mps2-an386)"
else
    echo "run-demo: PASSED (hi + login against the real gateway from QEMU mps2-an386)"
fi
echo "run-demo: $PASSES passed, 0 failed"
