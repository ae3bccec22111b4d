#!/bin/sh
# Redraws docs/latency.svg: loopchat (default --coalesce 5ms, and --coalesce 0) and
# ngIRCd at the same offered load, 3 runs each, on this machine's loopback only.
# Needs a release build (cargo build --release) and ngircd (apt-get install ngircd).
set -eu
cd "$(dirname "$0")/../.."
B=./target/release/loopchat
LOAD="--clients 200 --rooms 1 --senders 10 --rate 20 --duration 10s --concurrency 8 --repeat 3"

$B bench --spawn-server --label loopchat $LOAD --json docs/bench/loopchat-default.json
$B bench --spawn-server --server-arg=--coalesce=0 --label "loopchat --coalesce 0" $LOAD \
    --json docs/bench/loopchat-coalesce0.json

ngircd --nodaemon --config "$PWD/docs/ngircd-bench.conf" >/dev/null 2>&1 &
NGIRCD=$!
trap 'kill $NGIRCD' EXIT
sleep 1
$B bench --dialect irc --addr 127.0.0.1:16667 --server-pid $NGIRCD $LOAD --json docs/bench/ngircd.json

$B bench compare docs/bench/ngircd.json docs/bench/loopchat-default.json
$B bench compare docs/bench/ngircd.json docs/bench/loopchat-coalesce0.json
$B bench plot docs/bench/loopchat-default.json docs/bench/loopchat-coalesce0.json \
    docs/bench/ngircd.json -o docs/latency.svg \
    --title "Latency by percentile: 200 clients in one room, 10 senders × 20 msg/s for 10 s, 3 runs each (band: min–max)"
