# Shared by bench-http.sh and ab-http.sh (sourced, not run): a scratch dir and the background
# processes, both cleaned up on exit, and helpers to wait for a server and register petitions.
key=bench-admin-key-0001
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_http() { # url: waits up to 30 s for a 2xx answer
  for _ in $(seq 1 300); do
    if curl -sf "$1" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "no answer from $1" >&2
  exit 1
}

register() { # port id...
  local port=$1
  shift
  for id in "$@"; do
    curl -sf -X PUT -H "Authorization: Bearer $key" -H 'content-type: application/json' \
      -d '{}' "http://127.0.0.1:$port/v1/petitions/$id" >/dev/null
  done
}
