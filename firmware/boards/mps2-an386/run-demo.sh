#!/usr/bin/env bash
# run-demo.sh — the emulated counter terminal serving a customer through a real gateway, all on
# loopback. Every step is checked; the first one that does not happen stops the script with a
# message naming it, the firmware's and the gateway's last lines, and a non-zero exit.
#
#   1. builds `kefu` and the SDK customer example `desk_customer` (or uses $KEFU_BIN and the
#      `examples/desk_customer` next to it),
#   2. makes a device account (`kefu device add`, the terminal's token) and a customer account,
#   3. starts a gateway on 127.0.0.1 (free ports),
#   4. builds the firmware with the token and the gateway's port baked in, and checks the size
#      budget (flash = text + data <= 96 KiB, static RAM = data + bss <= 48 KiB),
#   5. boots it in QEMU (mps2-an386) with user-mode networking restricted to the guest
#      (`restrict=on`): the only ways out are guestfwd rules to 127.0.0.1 (the gateway through
#      `socat`, one host connection per guest connection, closes carried both ways; and the
#      bulk self-test's `yes` / `dd`). UART0 (the terminal's keyboard) and QMP are unix sockets.
#   6. the service-desk scenario:
#      a. the terminal logs in with its token and goes Online at the desk;
#      b. the customer (the real client SDK) opens a consultation: the desk assigns it to the
#         terminal;
#      c. the customer writes; the terminal SHOWS it and ACKNOWLEDGES it (the customer gets
#         its read receipt; the gateway retransmits nothing);
#      d. the agent REPLIES (a line typed on UART0); the reply ARRIVES at the customer;
#      e. the virtual cable is pulled (QMP set_link) and plugged back: a message sent meanwhile
#         is shown once;
#      f. the gateway is stopped with SIGTERM while the agent types a reply and the customer
#         writes; it restarts on the same port: both sides reconnect, both messages arrive once;
#      g. the same with kill -9;
#      h. the terminal is reset (QMP system_reset): it boots with the marks it kept, resumes the
#         consultation, shows again at most the unsaved tail (flagged "replayed"), and the next
#         message once;
#      i. the agent types /halt: the terminal tells the desk Offline, prints its peak stack, and
#         QEMU exits with code 0.
#      Finally: every customer message was shown exactly once as new, every reply arrived
#      exactly once.
#
# Environment:
#   KEFU_BIN          use this kefu binary (and examples/desk_customer next to it, if built)
#   CARGO_TARGET_DIR  target folder for the firmware build (default: ./target here)
#   QEMU_TIMEOUT      seconds the emulation may run (default 400)
#   BULK_BYTES        bulk self-test length in each direction (default 262144; 0 = off)
#   KEEP=1            keep the temporary folder (a failed run keeps it anyway)
#
# Needs (Debian): rustc-web rust-web-src cargo-web binutils-arm-none-eabi qemu-system-arm socat
set -euo pipefail

BOARD_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BOARD_DIR/../../.." && pwd)
QEMU_TIMEOUT=${QEMU_TIMEOUT:-400}
DEVICE=${KEFU_DEVICE:-counter-01}
CUSTOMER=carol
CUSTOMER_PASS=carol-pass-1

step() { printf '\n== %s\n' "$*"; }
PASSES=0
ok() {
    echo "ok: $1"
    PASSES=$((PASSES + 1))
}
fail() {
    printf '\nrun-demo: FAILED: %s\n' "$*" >&2
    for f in qemu.log:40 customer.log:20 gateway.log:20; do
        if [[ -n ${WORK:-} && -f $WORK/${f%%:*} ]]; then
            printf -- '--- %s ---\n' "$WORK/${f%%:*}" >&2
            tail -n "${f##*:}" "$WORK/${f%%:*}" >&2 || true
        fi
    done
    [[ -n ${WORK:-} ]] && KEEP=1 # keep the logs of a failed run
    printf 'run-demo: %d passed, 1 failed\n' "$PASSES" >&2
    exit 1
}

for tool in qemu-system-arm arm-none-eabi-ld arm-none-eabi-size /usr/bin/rustc cargo socat; do
    command -v "$tool" >/dev/null || fail "missing tool '$tool' (apt-get install rustc-web rust-web-src cargo-web binutils-arm-none-eabi qemu-system-arm socat)"
done
[[ -d /usr/lib/rustlib/src/rust/library/core ]] || fail "missing the standard library source (apt-get install rust-web-src)"

WORK=$(mktemp -d /tmp/kefu-demo.XXXXXX)
GW_PID=
QEMU_PID=
CUST_PID=
cleanup() {
    exec 3>&- 2>/dev/null || true
    for pid in $CUST_PID $QEMU_PID $GW_PID; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [[ ${KEEP:-0} == 1 ]]; then echo "run-demo: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

step "1. kefu binary and the SDK customer"
if [[ -n ${KEFU_BIN:-} ]]; then
    KEFU=$KEFU_BIN
    CUST_BIN=$(dirname "$KEFU")/examples/desk_customer
    if [[ ! -x $CUST_BIN ]]; then
        (cd "$ROOT" && cargo build -q --release -p kefu-host --example desk_customer) ||
            fail "building the desk_customer example"
        CUST_BIN=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
            sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/examples/desk_customer
    fi
else
    (cd "$ROOT" && cargo build -q --release -p kefu-host --bin kefu --example desk_customer) ||
        fail "building kefu and the desk_customer example"
    TARGET=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    KEFU=$TARGET/release/kefu
    CUST_BIN=$TARGET/release/examples/desk_customer
fi
[[ -x $KEFU ]] || fail "no kefu binary at $KEFU"
[[ -x $CUST_BIN ]] || fail "no desk_customer example at $CUST_BIN"
echo "using $KEFU and $CUST_BIN"

step "2. accounts: device '$DEVICE' (the terminal) and customer '$CUSTOMER'"
TOKEN=$("$KEFU" device add "$DEVICE" --data "$WORK/data" 2>"$WORK/device.log" | tail -n 1) ||
    fail "kefu device add (see $WORK/device.log)"
[[ $TOKEN =~ ^[A-Za-z0-9_-]+$ ]] || fail "kefu device add printed no token: '$TOKEN'"
echo "token: ${TOKEN:0:12}… (${#TOKEN} chars)"
"$KEFU" user add "$CUSTOMER" --password "$CUSTOMER_PASS" --data "$WORK/data" >"$WORK/user.log" 2>&1 ||
    fail "kefu user add (see $WORK/user.log)"

# Starts the gateway on 127.0.0.1:$1 (0: a free port) with the demo's data folder; sets GW_PID,
# PORT and HTTP once the gateway says where it listens.
start_gateway() {
    : >"$WORK/gateway.out" # exists before the background job opens it
    "$KEFU" gateway --data "$WORK/data" --http 127.0.0.1:0 --tcp "127.0.0.1:$1" --max-content 256 \
        >"$WORK/gateway.out" 2>>"$WORK/gateway.log" &
    GW_PID=$!
    PORT=
    for _ in $(seq 1 100); do
        PORT=$(sed -n 's/^kefu gateway listening: .*tcp=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/gateway.out")
        HTTP=$(sed -n 's/^kefu gateway listening: http=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/gateway.out")
        [[ -n $PORT ]] && break
        kill -0 "$GW_PID" 2>/dev/null || fail "the gateway exited at start"
        sleep 0.1
    done
    [[ -n $PORT ]] || fail "the gateway did not say where it listens within 10 s"
    echo "gateway pid $GW_PID, framed TCP on 127.0.0.1:$PORT, HTTP on 127.0.0.1:$HTTP"
}
# Stops the gateway with signal $1 and waits for it.
stop_gateway() {
    kill "-$1" "$GW_PID"
    wait "$GW_PID" 2>/dev/null || true
}
# A counter of the gateway's /metrics (0 if absent).
metric() {
    local body
    body=$(exec 4<>"/dev/tcp/127.0.0.1/$HTTP" && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&4 && cat <&4) ||
        fail "could not read the gateway's /metrics"
    awk -v m="$1" '$1 == m { print $2; found = 1 } END { if (!found) print 0 }' <<<"$body"
}

step "3. gateway on 127.0.0.1"
start_gateway 0

step "4. firmware build (token and port baked in) and the size budget"
BULK_BYTES=${BULK_BYTES:-262144}
export RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$BOARD_DIR/target}
(cd "$BOARD_DIR" && KEFU_TOKEN=$TOKEN KEFU_GATEWAY_PORT=$PORT KEFU_DEVICE=$DEVICE \
    KEFU_BULK_BYTES=$BULK_BYTES KEFU_BULK_PORT=9000 cargo build --release) ||
    fail "building the firmware"
ELF=$CARGO_TARGET_DIR/thumbv7em-none-eabihf/release/kefu-board-mps2-an386
arm-none-eabi-size "$ELF"
read -r TEXT DATA BSS _ < <(arm-none-eabi-size "$ELF" | tail -n 1)
FLASH=$((TEXT + DATA)) RAM=$((DATA + BSS))
echo "flash $FLASH bytes (budget 98304), static RAM $RAM bytes (budget 49152)"
((FLASH <= 98304)) || fail "flash $FLASH bytes is over the 96 KiB budget"
((RAM <= 49152)) || fail "static RAM $RAM bytes is over the 48 KiB budget"
ok "size within the budget: flash $FLASH <= 98304, static RAM $RAM <= 49152"

step "5. QEMU mps2-an386 (guest network restricted; guestfwd through socat to 127.0.0.1:$PORT)"
: >"$WORK/qemu.log"
timeout "$QEMU_TIMEOUT" qemu-system-arm -M mps2-an386 -display none -monitor none \
    -serial "unix:$WORK/uart.sock,server=on,wait=off" \
    -semihosting-config enable=on,target=native -kernel "$ELF" \
    -netdev "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:$PORT-cmd:socat -lf /dev/null STDIO TCP:127.0.0.1:$PORT,guestfwd=tcp:10.0.2.100:9000-cmd:yes kefu-bulk,guestfwd=tcp:10.0.2.100:9001-cmd:dd of=$WORK/bulk-tx.bin status=none" \
    -net nic,model=lan9118,netdev=n0 \
    -qmp "unix:$WORK/qmp.sock,server=on,wait=off" \
    >"$WORK/qemu.log" 2>&1 &
QEMU_PID=$!
tail -n +1 -f --pid="$QEMU_PID" "$WORK/qemu.log" | sed -u 's/^/  fw: /' &

# How many lines of log $1 match the extended regex $2.
count() { grep -cE -- "$2" "$WORK/$1" || true; }
# Waits until log $1 has at least $3 lines matching $2 (or $4 seconds pass, or QEMU ended).
wait_log() {
    for _ in $(seq 1 $(($4 * 10))); do
        (($(count "$1" "$2") >= $3)) && return 0
        kill -0 "$QEMU_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
fw() { wait_log qemu.log "$@"; }
cust() { wait_log customer.log "$@"; }
# Types a line on the terminal's keyboard (UART0).
type_line() {
    echo "run-demo: typing on the terminal: $1"
    printf '%s\r\n' "$1" | socat -t 1 - "UNIX-CONNECT:$WORK/uart.sock" ||
        fail "could not reach the terminal's serial port"
}
# Sends a command to the customer.
customer() {
    echo "run-demo: customer: $1"
    printf '%s\n' "$1" >&3 || fail "the customer program is gone"
}
# A QMP command; fails unless QEMU answers with "return".
qmp() {
    local reply
    reply=$(printf '{"execute":"qmp_capabilities"}\n%s\n' "$1" |
        socat -t 1 - "UNIX-CONNECT:$WORK/qmp.sock" | tail -n 1)
    [[ $reply == *'"return"'* ]] || fail "QMP $1 answered: $reply"
}
# The seq the customer's message $1 was stored with.
seq_of() { sed -n "s/^stored #\([0-9]*\) $1\$/\1/p" "$WORK/customer.log" | head -n 1; }
# Waits until the customer got a read receipt up to at least seq $1 (at most $2 seconds).
read_receipt() {
    for _ in $(seq 1 $(($2 * 10))); do
        (($(sed -n 's/^read #\([0-9]*\)$/\1/p' "$WORK/customer.log" | sort -n | tail -n 1) + 0 >= $1)) && return 0
        sleep 0.1
    done
    return 1
}

step "6. the service desk"
fw "kefu-board: lan9118 id" 1 10 || fail "the Ethernet controller was not found"
ok "Ethernet controller found and reset"
fw "kefu-board: dhcp address" 1 30 || fail "no DHCP lease"
ok "DHCP lease from QEMU"
if ((BULK_BYTES > 0)); then
    fw "kefu-board: bulk tx $BULK_BYTES bytes sent" 1 90 || fail "bulk self-test did not finish"
    fw "kefu-board: bulk rx $BULK_BYTES bytes ok" 1 1 || fail "bulk receive: the bytes were not all right"
    for _ in $(seq 1 100); do # dd writes its last block after the guest closed
        (($(stat -c %s "$WORK/bulk-tx.bin" 2>/dev/null || echo 0) >= BULK_BYTES)) && break
        sleep 0.1
    done
    head -c "$BULK_BYTES" < <(yes kefu-bulk) | cmp -s - "$WORK/bulk-tx.bin" ||
        fail "bulk send: $WORK/bulk-tx.bin is not the $BULK_BYTES bytes the firmware sent"
    ok "bulk self-test: $BULK_BYTES bytes each way through the LAN9118 driver, every byte checked"
fi

# a. Login and Online.
fw "status: online as usr" 1 30 || fail "the terminal did not log in with its device token"
ok "the terminal logged in with its device token"
fw "status: agent online" 1 10 || fail "the terminal did not go Online at the desk"
ok "the terminal is Online at the desk"

# b. A customer opens a consultation.
mkfifo "$WORK/customer.in"
"$CUST_BIN" "tcp://127.0.0.1:$PORT" "$CUSTOMER" "$CUSTOMER_PASS" <"$WORK/customer.in" \
    >"$WORK/customer.log" 2>"$WORK/customer.err" &
CUST_PID=$!
exec 3>"$WORK/customer.in"
tail -n +1 -f --pid="$CUST_PID" "$WORK/customer.log" | sed -u 's/^/  customer: /' &
cust "^online" 1 20 || fail "the customer did not log in"
customer "open"
cust "^consultation cns" 1 20 || fail "the customer could not open a consultation"
TOPIC=$(sed -n 's/^consultation \(cns[a-z0-9]*\)$/\1/p' "$WORK/customer.log")
fw "status: assigned $TOPIC" 1 10 || fail "the desk did not assign $TOPIC to the terminal"
ok "the customer opened $TOPIC and the desk assigned it to the terminal"

# c. Show and acknowledge.
customer "say hello 1"
cust "^stored #1 hello 1" 1 20 || fail "the customer's first message was not stored"
fw "msg $TOPIC #1 usr[a-z0-9]+: hello 1$" 1 20 || fail "the terminal did not show the customer's message"
ok "the terminal showed the customer's message"
read_receipt 1 20 || fail "the customer got no read receipt from the terminal"
sleep 3 # the gateway's push window retransmits after 1 s without an ack
RETRANSMITS=$(metric kefu_retransmits_total)
[[ $RETRANSMITS == 0 ]] || fail "the gateway retransmitted $RETRANSMITS pushes: an ack went missing"
ok "the terminal acknowledged it: read receipt at the customer, no retransmission in 3 s (acks $(metric kefu_acks_total))"

# d. The agent replies.
type_line "reply 1"
fw "status: sent $TOPIC #2" 1 20 || fail "the gateway did not store the agent's reply"
cust "^agent #2 reply 1$" 1 20 || fail "the reply did not arrive at the customer"
ok "the agent's reply (typed on UART0) arrived at the customer"

# e. The cable is pulled and plugged back.
echo "run-demo: pulling the virtual cable (QMP set_link n0 down)"
qmp '{"execute":"set_link","arguments":{"name":"n0","up":false}}'
fw "status: link down" 1 10 || fail "the terminal did not see the link go down"
customer "say hello 2"
cust "^stored #[0-9]+ hello 2$" 1 20 || fail "hello 2 was not stored"
sleep 2
(($(count qemu.log ": hello 2$") == 0)) || fail "a message reached the terminal with the cable out"
echo "run-demo: plugging it back in"
qmp '{"execute":"set_link","arguments":{"name":"n0","up":true}}'
fw "msg $TOPIC #$(seq_of "hello 2") usr[a-z0-9]+: hello 2$" 1 40 ||
    fail "the message sent while the cable was out was not shown after it came back"
ok "link down and up: the message sent meanwhile was shown after the reconnect"

# f and g. The gateway restarts: SIGTERM, then kill -9.
round=2
for sig in TERM KILL; do
    n=$((round + 1))
    offline=$(count qemu.log "status: offline")
    logins=$(count qemu.log "status: online as usr")
    echo "run-demo: stopping the gateway (SIG$sig)"
    stop_gateway "$sig"
    fw "status: offline" $((offline + 1)) 30 || fail "the terminal did not notice the gateway going away (SIG$sig)"
    type_line "reply $round"
    fw "msg $TOPIC \(sending\) me: reply $round$" 1 10 || fail "the terminal did not take the reply typed while the gateway was away"
    customer "say hello $n"
    sleep 2
    echo "run-demo: starting the gateway again on 127.0.0.1:$PORT"
    start_gateway "$PORT"
    fw "status: online as usr" $((logins + 1)) 60 || fail "the terminal did not reconnect after SIG$sig"
    cust "^agent #[0-9]+ reply $round$" 1 40 || fail "the reply typed while the gateway was away (SIG$sig) did not arrive"
    fw "msg $TOPIC #[0-9]+ me: reply $round$" 1 20 || fail "the terminal did not see its reply $round stored"
    cust "^stored #[0-9]+ hello $n$" 1 40 || fail "the customer's message sent while the gateway was away (SIG$sig) was not stored"
    fw "msg $TOPIC #$(seq_of "hello $n") usr[a-z0-9]+: hello $n$" 1 40 ||
        fail "the terminal did not show the message sent while the gateway was away (SIG$sig)"
    ok "gateway SIG$sig and restart: the terminal reconnected; the reply typed meanwhile and the customer's message each arrived"
    round=$((round + 1))
done

# h. A reset: the terminal boots again with the marks it kept.
LAST=$(seq_of "hello 4")
read_receipt "$LAST" 20 || fail "the terminal did not read up to hello 4"
SHOWN_BEFORE=$(count qemu.log ": msg $TOPIC #")
LOGINS=$(count qemu.log "status: online as usr")
echo "run-demo: resetting the terminal (QMP system_reset)"
qmp '{"execute":"system_reset"}'
fw "kefu-board: mps2-an386 up" 2 20 || fail "the terminal did not boot again after the reset"
fw "kefu-board: marks kept from before the reset: 1 topics" 1 20 ||
    fail "the terminal did not find the marks it kept across the reset"
fw "status: online as usr" $((LOGINS + 1)) 60 || fail "the terminal did not log in again after the reset"
fw "status: subscribed $TOPIC" 1 20 || fail "the terminal did not resume $TOPIC after the reset"
customer "say hello 5"
cust "^stored #[0-9]+ hello 5$" 1 20 || fail "hello 5 was not stored"
fw "msg $TOPIC #$(seq_of "hello 5") usr[a-z0-9]+: hello 5$" 1 40 ||
    fail "the terminal did not show the first message after the reset"
# After the reset only the unsaved tail may come again, flagged replayed, never as new.
AFTER=$(grep -E ": msg $TOPIC #" "$WORK/qemu.log" | tail -n +$((SHOWN_BEFORE + 1)))
REPLAYED=$(grep -c "(replayed)" <<<"$AFTER" || true)
NEW_AGAIN=$(grep -v "(replayed)" <<<"$AFTER" | grep -cvE ": hello 5$" || true)
((NEW_AGAIN == 0)) || fail "after the reset $NEW_AGAIN earlier messages were shown again as new"
ok "reset: resumed $TOPIC from the kept marks; $REPLAYED earlier messages shown again flagged replayed (the unsaved tail), hello 5 shown as new"

# i. Halt.
type_line "/halt"
fw "status: agent offline" 1 10 || fail "the terminal did not tell the desk it is going offline"
fw "kefu-board: halted; stack peak" 1 10 || fail "the terminal did not halt"
set +e
wait "$QEMU_PID"
QEMU_RC=$?
set -e
sleep 0.2 # let tail print the last lines
[[ $QEMU_RC == 124 ]] && fail "QEMU still running after ${QEMU_TIMEOUT} s"
[[ $QEMU_RC == 0 ]] || fail "firmware exited with code $QEMU_RC"
ok "/halt: the terminal went Offline at the desk and exited with code 0 ($(sed -n 's/.*halted; \(stack peak [0-9]* of [0-9]* bytes\).*/\1/p' "$WORK/qemu.log"))"

step "7. exactly once"
for i in 1 2 3 4 5; do
    n=$(grep -E ": msg $TOPIC #[0-9]+ usr[a-z0-9]+: hello $i$" "$WORK/qemu.log" | grep -vc "(replayed)" || true)
    ((n == 1)) || fail "hello $i was shown $n times as new"
done
for i in 1 2 3; do
    n=$(count customer.log "^agent #[0-9]+ reply $i$")
    ((n == 1)) || fail "reply $i arrived $n times at the customer"
done
ok "each of the customer's 5 messages shown once as new; each of the agent's 3 replies arrived once"
echo
echo "run-demo: PASSED (the counter terminal served a customer through a real gateway: QEMU mps2-an386, loopback only)"
echo "run-demo: $PASSES passed, 0 failed"
