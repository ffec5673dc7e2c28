-- wrk script: single-signature POSTs, a new signer each time, on one petition (P3).
-- wrk -t2 -c64 -d10s -s benches/wrk/sign.lua http://127.0.0.1:8080
-- Env: PETITION (default "bench"), API_KEY (default none: open mode).
local petition = os.getenv("PETITION") or "bench"
local key = os.getenv("API_KEY")
local counter = 0
local threads = {}

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.path = "/v1/petitions/" .. petition .. "/signatures"
  wrk.headers["Content-Type"] = "application/json"
  if key then wrk.headers["Authorization"] = "Bearer " .. key end
  run_id = os.time()
end

function request()
  counter = counter + 1
  local body = string.format('{"email":"r%d-t%d-%d@example.org"}', run_id, thread_id, counter)
  return wrk.format(nil, nil, nil, body)
end

statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses")
    for code, n in pairs(s) do io.write(string.format("status %d: %d\n", code, n)) end
  end
end
