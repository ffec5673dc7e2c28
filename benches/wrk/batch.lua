-- wrk script: NDJSON batches of LINES signatures (default 1000), new signers, viral shape:
-- HOT_SHARE (default 0.9) of lines go to petition "<PETITION>-0", the rest spread over
-- PETITIONS (default 100) petitions "<PETITION>-0".."<PETITION>-(PETITIONS-1)" (P4).
-- wrk -t2 -c8 -d20s -s benches/wrk/batch.lua http://127.0.0.1:8080
local prefix = os.getenv("PETITION") or "bench"
local key = os.getenv("API_KEY")
local lines = tonumber(os.getenv("LINES") or "1000")
local petitions = tonumber(os.getenv("PETITIONS") or "100")
local hot_share = tonumber(os.getenv("HOT_SHARE") or "0.9")
local counter = 0
local threads = {}

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.path = "/v1/signatures:batch"
  wrk.headers["Content-Type"] = "application/x-ndjson"
  if key then wrk.headers["Authorization"] = "Bearer " .. key end
  run_id = os.time()
  math.randomseed(run_id + thread_id)
end

function request()
  local parts = {}
  for i = 1, lines do
    counter = counter + 1
    local p = 0
    if math.random() >= hot_share then p = math.random(0, petitions - 1) end
    parts[i] = string.format('{"petition":"%s-%d","email":"r%d-t%d-%d@example.org"}',
      prefix, p, run_id, thread_id, counter)
  end
  return wrk.format(nil, nil, nil, table.concat(parts, "\n") .. "\n")
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
  io.write(string.format("signatures/s (if all 200): %.0f\n",
    summary.requests * lines / (summary.duration / 1e6)))
end
