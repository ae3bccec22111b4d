#!/bin/sh
# WebSocket against plain TCP, back to back with the same flags, on a fresh release
# server each run: (a) idle memory per joined connection, 10 000 clients held 5 s;
# (b) fan-out, 1 000 clients in one room, 10 senders x 100 msg/s for 10 s, 3 runs each,
# then `bench compare`. Needs a release build (cargo build --release) and an open-files
# hard limit of at least 20 000 (the harness and the server each hold 10 000 sockets).
# Run it on a quiet machine: check `uptime` first.
set -eu
cd "$(dirname "$0")/../.."
B=./target/release/loopchat
OUT=${OUT:-docs/bench}
ulimit -n 20000

IDLE="--clients 10000 --senders 0 --duration 0 --idle 5s --concurrency 512"
$B bench --spawn-server $IDLE --json "$OUT/idle-tcp.json"
$B bench --spawn-server --ws $IDLE --json "$OUT/idle-ws.json"

FANOUT="--clients 1000 --senders 10 --rate 100 --duration 10s --repeat 3"
$B bench --spawn-server $FANOUT --json "$OUT/fanout-tcp.json"
$B bench --spawn-server --ws $FANOUT --json "$OUT/fanout-ws.json"

$B bench compare "$OUT/fanout-tcp.json" "$OUT/fanout-ws.json"
