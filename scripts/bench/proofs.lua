-- proofs.lua — the wrk script of scripts/bench/proofs.
--
-- PATHS_FILE holds one request path a line (/v1/proofs/<tag> or /v1/tags/<tag>); every request
-- carries "Authorization: Bearer TOKEN". Thread i of THREADS starts at the i-th equal share.
--   wrk -s proofs.lua URL -- PATHS_FILE THREADS MODE TOKEN
--   MODE cycle  each thread walks the whole list from its offset, round and round.
--   MODE once   each thread walks only its own share, once, then repeats its last path (so a
--               cold round never asks for one tag twice; the caller sizes the list so that
--               no thread reaches its end).
-- done() prints one line, "BENCH key=value ...", that scripts/bench/proofs reads; non-2xx
-- answers count as err_status (wrk counts them itself).

local counter = 0

function setup(thread)
  thread:set("index", counter)
  counter = counter + 1
end

local reqs, n, pos, mode

function init(args)
  local file, threads, token = args[1], tonumber(args[2]), args[4]
  mode = args[3]
  wrk.headers["Authorization"] = "Bearer " .. token
  wrk.headers["Accept"] = "application/json"
  local paths = {}
  for line in io.lines(file) do
    if line ~= "" then paths[#paths + 1] = line end
  end
  n = #paths
  if n == 0 then error("no paths in " .. file) end
  local me = tonumber(wrk.thread:get("index")) or 0
  local share = math.floor(n / threads)
  local first = me * share
  reqs = {}
  if mode == "once" then
    local last = (me == threads - 1) and n or first + share
    for i = first + 1, last do reqs[#reqs + 1] = wrk.format("GET", paths[i]) end
    -- wrk calls request() once on thread 0 before any connection, to check the script:
    -- that call gets a copy of the first request, so the first path is still asked.
    if me == 0 and #reqs > 0 then table.insert(reqs, 1, reqs[1]) end
    n = #reqs
  else
    for i = 1, n do reqs[i] = wrk.format("GET", paths[((first + i - 1) % n) + 1]) end
  end
  pos = 0
end

function request()
  pos = pos + 1
  if pos > n then pos = (mode == "once") and n or 1 end
  return reqs[pos]
end

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    "BENCH requests=%d duration_s=%.3f rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f " ..
    "max_ms=%.3f mean_ms=%.3f err_connect=%d err_read=%d err_write=%d err_status=%d " ..
    "err_timeout=%d\n",
    summary.requests, secs, summary.requests / secs, latency:percentile(50) / 1000,
    latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    latency.mean / 1000, e.connect, e.read, e.write, e.status, e.timeout))
end
