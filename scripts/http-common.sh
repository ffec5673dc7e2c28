# Shared by bench-http.sh, ab-http.sh, bench-replicated.sh, ab-replicated.sh, bench-r2.sh,
# bench-takeover.sh and bench-snapshot.sh (sourced, not run): a scratch dir and the background
# processes, both cleaned up on exit, and helpers to wait for a server, register petitions, sign
# one from many places and start a replicated deployment.
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

position() { # port: the node's log position, as its /readyz says
  curl -s "http://127.0.0.1:$1/readyz" | grep -o '"position":[0-9]*' | cut -d: -f2 || true
}

stored() { # port: the signatures the server holds, as its /metrics says
  curl -s "http://127.0.0.1:$1/metrics" | awk '/^ingest_stored_signatures / {print $2 + 0}'
}

fill() { # port n [command]: registers bench-0..bench-99 and sends them NDJSON batches (wrk,
  # 1,000 lines a request, viral 0.9) until the server holds n signatures, running command after
  # each 10 s of load
  local start
  register "$1" $(seq -f 'bench-%g' 0 99)
  start=$(date +%s)
  while [ "$(stored "$1")" -lt "$2" ]; do
    API_KEY=$key PETITION=bench LINES=1000 PETITIONS=100 wrk -t2 -c8 -d10s \
      -s "$here/benches/wrk/batch.lua" "http://127.0.0.1:$1" >/dev/null
    if [ -n "${3:-}" ]; then "$3"; fi
  done
  echo "stored $(stored "$1") signatures in $(( $(date +%s) - start )) s"
}

register() { # port id...
  local port=$1
  shift
  for id in "$@"; do
    curl -sf -X PUT -H "Authorization: Bearer $key" -H 'content-type: application/json' \
      -d '{}' "http://127.0.0.1:$port/v1/petitions/$id" >/dev/null
  done
}

load_places() { # port id n: n new signers of petition id (n at most 10000), from 10 countries
  # and 20 regions in each; one in 8 names no country (ZZ), one in 8 a country alone. One batch.
  awk -v id="$2" -v n="$3" -v run="$(date +%s%N)" 'BEGIN {
    split("GB FR DE US IE ES IT NL PL SE", cc, " ")
    for (i = 0; i < n; i++) {
      place = ""
      if (i % 8 != 0) {
        place = sprintf(",\"country\":\"%s\"", cc[i % 10 + 1])
        if (i % 8 != 1) place = place sprintf(",\"region\":\"R%d\"", i % 200)
      }
      printf "{\"petition\":\"%s\",\"email\":\"places-%s-%d@example.org\"%s}\n", id, run, i, place
    }
  }' >"$work/places.ndjson"
  curl -sf -X POST -H "Authorization: Bearer $key" -H 'content-type: application/x-ndjson' \
    --data-binary "@$work/places.ndjson" "http://127.0.0.1:$1/v1/signatures:batch" |
    awk -v n="$3" '/"status":"accepted"/ {ok++} END {
      if (ok != n) {print "load_places: " ok + 0 " of " n " signatures accepted" > "/dev/stderr"; exit 1} }'
}

settle() { # waits (at most 120 s) until the machine is quiet: under 5% of its CPU time busy over
  # a second, steal not counted (another server's flushes and compactions done); prints the
  # seconds waited
  # /proc/stat's cpu line: user nice system idle iowait irq softirq steal ...
  local waited=0 a b busy quiet
  while [ "$waited" -lt 120 ]; do
    read -r -a a </proc/stat
    sleep 1
    read -r -a b </proc/stat
    waited=$((waited + 1))
    busy=$((b[1] + b[2] + b[3] + b[6] + b[7] - a[1] - a[2] - a[3] - a[6] - a[7]))
    quiet=$((b[4] + b[5] - a[4] - a[5]))
    [ $((busy * 20)) -lt $((busy + quiet)) ] && break
  done
  echo "$waited"
}

cluster_up() { # binary: scripts/cluster-up.sh 2 with this binary under $work, stopped on exit;
  # the owner's port in $owner, the standby's in $standby (API key $key in INGEST_API_KEYS)
  export CLUSTER_DIR="$work/cluster"
  export INGEST_API_KEYS="admin:$key"
  trap 'CLUSTER_DIR=$CLUSTER_DIR "$here/scripts/cluster-down.sh" >/dev/null 2>&1 || true; cleanup' EXIT
  INGEST_SERVER=$1 "$here/scripts/cluster-up.sh" 2 >/dev/null
  if curl -s http://127.0.0.1:8081/readyz | grep -q '"role":"owner"'; then
    owner=8081 standby=8082
  else
    owner=8082 standby=8081
  fi
}
