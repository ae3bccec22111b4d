#!/bin/sh
# WebSocket against plain TCP with the same flags, on a fresh release server each run:
# (a) idle memory per joined connection: 10 000 clients held 5 s, 3 runs each;
# (b) fan-out: 1 000 clients in one room, 10 senders x 100 msg/s for 10 s, as three
#     pairs of single runs, TCP and WebSocket back to back, the order alternating, so a
#     change in the machine's load hits both alike.
# Needs a release build (cargo build --release) and an open-files hard limit of at
# least 20 000 (the harness and the server each hold 10 000 sockets). Run it on a quiet
# machine (check `uptime`): at 1 000 msg/s in the server and the harness keep both of 2
# cores busy, so anything else running shows in the latency. Reports go to $OUT.
set -eu
cd "$(dirname "$0")/../.."
B=./target/release/loopchat
OUT=${OUT:-${TMPDIR:-/tmp}/loopchat-ws-vs-tcp}
mkdir -p "$OUT"
ulimit -n 20000

IDLE="--spawn-server --clients 10000 --senders 0 --duration 0 --idle 5s --concurrency 512 --repeat 3"
$B bench $IDLE --json "$OUT/idle-tcp.json"
$B bench $IDLE --ws --json "$OUT/idle-ws.json"

FANOUT="--spawn-server --clients 1000 --senders 10 --rate 100 --duration 10s"
for pair in 1 2 3; do
    if [ $((pair % 2)) = 1 ]; then order="tcp ws"; else order="ws tcp"; fi
    for t in $order; do
        if [ "$t" = ws ]; then ws=--ws; else ws=; fi
        $B bench $FANOUT $ws --json "$OUT/fanout-$t-$pair.json"
    done
done
echo "reports in $OUT"
