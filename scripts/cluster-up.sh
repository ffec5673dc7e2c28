#!/usr/bin/env bash
# Starts a replicated deployment on this machine: a 3-node NATS JetStream cluster on loopback
# and engine nodes (default 2) that share it, one owner and standbys. Everything lives under
# $CLUSTER_DIR (default /tmp/ingest-cluster); scripts/cluster-down.sh stops it.
#
#   scripts/cluster-up.sh [NODES]
#
# NATS: client ports 4222-4224, routes 6222-6224, monitoring 8222-8224.
# Engine nodes: HTTP on 127.0.0.1:8081, 8082, ... (any node takes any request).
# Environment: CLUSTER_DIR, INGEST_SERVER (the binary; default target/release/ingest-server),
# NATS_SERVER (default: nats-server on PATH), and any INGEST_* setting for the nodes.
set -euo pipefail

nodes=${1:-2}
dir=${CLUSTER_DIR:-/tmp/ingest-cluster}
here=$(cd "$(dirname "$0")/.." && pwd)
server=${INGEST_SERVER:-$here/target/release/ingest-server}
nats=${NATS_SERVER:-nats-server}

command -v "$nats" >/dev/null || { echo "nats-server not found (see the README: Replicated deployment)" >&2; exit 1; }
[ -x "$server" ] || { echo "$server not found: cargo build --release -p ingest-server" >&2; exit 1; }
if [ -e "$dir/pids" ]; then
  echo "$dir/pids exists: a deployment is running there (scripts/cluster-down.sh)" >&2
  exit 1
fi
mkdir -p "$dir"

routes="nats://127.0.0.1:6222,nats://127.0.0.1:6223,nats://127.0.0.1:6224"
for i in 1 2 3; do
  cat > "$dir/nats-$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:$((4221 + i))
http: 127.0.0.1:$((8221 + i))
# An engine batch is one message: room for the largest.
max_payload: 8MB
jetstream {
  store_dir: "$dir/nats-$i"
  # Acknowledged means fsynced on a quorum.
  sync_interval: always
}
cluster {
  name: ingest-nats
  listen: 127.0.0.1:$((6221 + i))
  routes: [$routes]
}
CONF
  "$nats" -c "$dir/nats-$i.conf" >"$dir/nats-$i.log" 2>&1 &
  echo "$! nats-$i" >>"$dir/pids"
done

for i in 1 2 3; do
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$((8221 + i))/healthz?js-enabled-only=true" >/dev/null && break
    sleep 0.1
  done
done

urls="nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224"
for i in $(seq "$nodes"); do
  port=$((8080 + i))
  "$server" --nats "$urls" --node "node-$i" --listen "127.0.0.1:$port" \
    --data-dir "$dir/node-$i" >"$dir/node-$i.log" 2>&1 &
  echo "$! node-$i" >>"$dir/pids"
done

# Ready when one node owns and every node answers /readyz with 200 (a standby does once it knows
# the owner): a request sent to any node right after this script returns is taken.
for _ in $(seq 300); do
  owner="" ready=0
  for i in $(seq "$nodes"); do
    if answer=$(curl -fs "http://127.0.0.1:$((8080 + i))/readyz" 2>/dev/null); then
      ready=$((ready + 1))
      if grep -q '"role":"owner"' <<<"$answer"; then
        owner=$i
      fi
    fi
  done
  if [ -n "$owner" ] && [ "$ready" -eq "$nodes" ]; then
    echo "owner: node-$owner at http://127.0.0.1:$((8080 + owner)); nodes at 127.0.0.1:8081-$((8080 + nodes)); logs in $dir"
    exit 0
  fi
  sleep 0.1
done
echo "the nodes were not all ready, one of them owner, within 30 s: see $dir/*.log" >&2
exit 1
