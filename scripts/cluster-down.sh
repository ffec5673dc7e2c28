#!/usr/bin/env bash
# Stops what scripts/cluster-up.sh started (engine nodes first, with SIGTERM, then NATS).
# With --wipe, also deletes the data under $CLUSTER_DIR.
set -euo pipefail
dir=${CLUSTER_DIR:-/tmp/ingest-cluster}
[ -e "$dir/pids" ] || { echo "nothing running under $dir" >&2; exit 0; }
for kind in node nats; do
  while read -r pid name; do
    case $name in "$kind"-*) kill "$pid" 2>/dev/null || true ;; esac
  done <"$dir/pids"
  while read -r pid name; do
    case $name in "$kind"-*) while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done ;; esac
  done <"$dir/pids"
done
rm -f "$dir/pids"
if [ "${1:-}" = --wipe ]; then rm -rf "$dir"; fi
echo "stopped"
