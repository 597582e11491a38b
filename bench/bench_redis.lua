-- make bench, the Redis rows: a store hit through cache_resource.redis
-- beside a bare GET of the same bytes sent by the same client code
-- (store:command, the path every store call takes), on a redis-server on
-- loopback (CR_REDIS_PORT's, or a private one). Wall-clock microseconds per
-- call, the median of interleaved rounds, and the median per-round ratio
-- beside the target (the store adds at most 1.5x). `QUICK=1`: a short run.
-- Without redis-server it prints a note and ends.
package.path = "lua/?.lua;spec/?.lua;bench/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath

local QUICK = os.getenv("QUICK") == "1"
local ROUNDS = QUICK and 3 or 7
local TARGET = 1.5

local rs = require "redis_support"
if not rs.available then
  print("bench_redis: skipped, " .. rs.MISSING)
  return
end

local cqueues = require "cqueues"
local redis = require "cache_resource.redis"
local monotime = cqueues.monotime

local rounds = require "rounds"
local median = rounds.median

local server, own = rs.shared()
local store = redis.connect { port = server.port, prefix = ("cr-bench:%d:"):format(os.time()) }
local NS, KEY = ("%032x"):format(0xbe), ("%032x"):format(1)
local ENTRY = store.prefix .. "e:" .. NS .. ":" .. KEY

-- Wall-clock seconds of body(n) (the calls wait for the server), inside a
-- cqueues coroutine when in_cq.
local function wall_time(in_cq)
  return function(body, n)
    local t
    local function run()
      local t0 = monotime()
      body(n)
      t = monotime() - t0
    end
    if in_cq then
      local cq = cqueues.new()
      cq:wrap(run)
      assert(cq:loop())
    else
      run()
    end
    return t
  end
end

-- The median microseconds per call of the store hit and of the bare GET,
-- and the median per-round ratio of the two.
local function side_by_side(bodies, n, in_cq)
  local samples = rounds.interleaved(bodies, n, ROUNDS, wall_time(in_cq))
  local ratios = {}
  for r = 1, ROUNDS do ratios[r] = samples[1][r] / samples[2][r] end
  return median(samples[1]) * 1e6, median(samples[2]) * 1e6, median(ratios)
end

local rows = {}
local function case(name, size, n, in_cq)
  local bytes = ("x"):rep(size)
  assert(store:set(NS, KEY, bytes))
  assert(store:get(NS, KEY) == bytes)
  assert(#store:command("GET", ENTRY) > size)
  local hit = function(k)
    for _ = 1, k do
      if not store:get(NS, KEY) then error("a store miss") end
    end
  end
  local bare = function(k)
    for _ = 1, k do
      if not store:command("GET", ENTRY) then error("a bare GET failed") end
    end
  end
  local us_hit, us_bare, ratio = side_by_side({ hit, bare }, n, in_cq)
  rows[#rows + 1] = { name, "store:get (a hit)", us_hit, ratio,
    ("target <= %.1fx: %s"):format(TARGET, ratio <= TARGET and "met" or "NOT met") }
  rows[#rows + 1] = { "", "bare GET of the same bytes, same client", us_bare, nil, "" }
end

case("100 B entry", 100, QUICK and 500 or 20000)
case("10 KB entry", 10 * 1024, QUICK and 300 or 10000)
case("1 MB entry", 1024 * 1024, QUICK and 10 or 300)
case("100 B, in cqueues", 100, QUICK and 500 or 20000, true)

store:clear(nil)
if own then server:stop() end

print(("cache_resource Redis bench — %s, redis-server on loopback, %d rounds (median)%s"):format(_VERSION, ROUNDS,
  QUICK and " [QUICK]" or ""))
print()
print(("| %-20s | %-40s | %9s | %7s | %s"):format("case", "variant", "us/call", "ratio", "note"))
print("|" .. ("-"):rep(22) .. "|" .. ("-"):rep(42) .. "|" .. ("-"):rep(11) .. "|" .. ("-"):rep(9) .. "|------")
for _, r in ipairs(rows) do
  print(("| %-20s | %-40s | %9.1f | %7s | %s"):format(r[1], r[2], r[3], r[4] and ("%.2fx"):format(r[4]) or "",
    r[5]))
end
