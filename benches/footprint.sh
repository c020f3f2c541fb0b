#!/usr/bin/env bash
# Embedded footprint: builds the smallest Listener (h2rev2-smol's `sensor` example)
# with the size profile, runs it against a local `h2rev2 server`, checks that a
# request through the tunnel reaches it, and prints its size, RSS and threads (the
# README's "Embedded footprint" table). Needs the release `h2rev2` binary (built if
# missing), curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p h2rev2-smol --example sensor --profile min-size
[ -x target/release/h2rev2 ] || cargo build -q --release -p h2rev2-cli
sensor_bin=target/min-size/examples/sensor
dir=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
printf 'sensor-7 s3cret\n' >"$dir/tokens.txt"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
target/release/h2rev2 server --listen "127.0.0.1:$port" --self-signed \
  --cert-out "$dir/srv.crt" --tokens "$dir/tokens.txt" >"$dir/server.log" 2>&1 &
for _ in $(seq 100); do grep -q "Serving on" "$dir/server.log" && break; sleep 0.1; done
H2REV2_TOKEN=s3cret "$sensor_bin" "https://127.0.0.1:$port" sensor-7 --ca "$dir/srv.crt" \
  >"$dir/sensor.log" 2>&1 &
sensor=$!
url="https://127.0.0.1:$port/proxy/sensor-7/"
got=""
for _ in $(seq 100); do
  got=$(curl -s --cacert "$dir/srv.crt" "$url" || true)
  [ "$got" = "sensor-7: ok" ] && break
  sleep 0.1
done
if [ "$got" != "sensor-7: ok" ]; then
  echo "no answer through the tunnel: '$got'"; cat "$dir/server.log" "$dir/sensor.log"; exit 1
fi
for _ in $(seq 200); do curl -s -o /dev/null --cacert "$dir/srv.crt" "$url"; done
sleep 5
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$sensor/status")
threads=$(awk '/^Threads/ {print $2}' "/proc/$sensor/status")
size=$(stat -c %s "$sensor_bin")
echo "sensor (min-size, stripped): $size bytes ($(( size / 1024 )) KiB), RSS ${rss} KiB after 200 proxied requests, $threads threads ($(cat /proc/$sensor/task/*/comm | tr '\n' ' '))"
