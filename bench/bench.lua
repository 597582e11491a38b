-- make bench: cache_resource against the alternatives a Lua developer would
-- pick, side by side in one process. Prints ns per call (median of several
-- rounds) and ratios. `QUICK=1` runs a short version (a smoke test: CI makes
-- no timing assertions).
package.path = "lua/?.lua;bench/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local cr = require "cache_resource"

local QUICK = os.getenv("QUICK") == "1"
local N = QUICK and 20000 or 1000000      -- calls per round
local ROUNDS = QUICK and 3 or 7
local clock = os.clock

local rounds = require "rounds"
local median = rounds.median

local function cpu_time(body, n)
  local t0 = clock()
  body(n)
  return clock() - t0
end

-- Times bodies side by side (rounds.interleaved); each body(n) makes n
-- calls, and setups[body], when there is one, runs untimed before each of
-- its timed rounds. Returns each body's median ns per call and, when base
-- is given, each body's median per-round ratio to bodies[base], and the
-- samples (ns per call, by body and round).
local function measure_set(bodies, n, base, setups)
  n = n or N
  local time = cpu_time
  if setups then
    time = function(body, k)
      local setup = setups[body]
      if setup then setup() end
      return cpu_time(body, k)
    end
  end
  local samples = rounds.interleaved(bodies, n, ROUNDS, time)
  for i = 1, #bodies do
    for r = 1, ROUNDS do samples[i][r] = samples[i][r] * 1e9 end
  end
  local ns, ratios = {}, {}
  for i = 1, #bodies do
    if base then
      local per_round = {}
      for r = 1, ROUNDS do per_round[r] = samples[i][r] / samples[base][r] end
      ratios[i] = median(per_round)
    end
    local sorted = { table.unpack(samples[i]) }
    ns[i] = median(sorted)
  end
  return ns, ratios, samples
end

local rows = {}
local function row(group, name, ns, ratio, note)
  rows[#rows + 1] = { group = group, name = name, ns = ns, ratio = ratio, note = note }
end

-- One group of rows measured side by side. variants: { { name, body,
-- note = ..., base = true, setup = fn }, ... }; ratios are to the base
-- variant; setup runs untimed before each timed round of its body.
local function group(name, variants, n)
  local bodies, base, setups = {}, nil, nil
  for i, v in ipairs(variants) do
    bodies[i] = v[2]
    if v.base then base = i end
    if v.setup then
      setups = setups or {}
      setups[v[2]] = v.setup
    end
  end
  local ns, ratios, samples = measure_set(bodies, n, base, setups)
  local by_name = {}
  for i, v in ipairs(variants) do
    row(name, v[1], ns[i], ratios[i], v.note)
    by_name[v[1]] = { ns = ns[i], ratio = ratios[i], row = rows[#rows], samples = samples[i] }
  end
  return by_name
end

-- How many times faster a is than b: the median of the per-round ratios.
local function speedup(a, b)
  local per_round = {}
  for r = 1, #a.samples do per_round[r] = b.samples[r] / a.samples[r] end
  return median(per_round)
end

-- "2.4x faster than X (target >= 2x: met)"
local function against(times, what, target, at_most)
  local met = at_most and times <= target or (not at_most and times >= target)
  return string.format("%.2fx %s (target %s %gx: %s)", times, what, at_most and "<=" or ">=", target,
    met and "met" or "NOT met")
end

-- ---- the alternatives ---------------------------------------------------

local function work(a, b, c) return { a, b, c } end

-- A generic memoizer as the common Lua libraries write it: nested tables
-- keyed by each argument, a sentinel for nil, the argument count in front.
local NIL, RESULT = {}, {}
local function memoize_nested(fn)
  local root = {}
  return function(...)
    local n = select("#", ...)
    local node = root[n]
    if not node then node = {}; root[n] = node end
    for i = 1, n do
      local a = select(i, ...)
      if a == nil then a = NIL end
      local child = node[a]
      if not child then child = {}; node[a] = child end
      node = child
    end
    local r = node[RESULT]
    if r == nil then r = table.pack(fn(...)); node[RESULT] = r end
    return table.unpack(r, 1, r.n)
  end
end

-- A memoizer keyed by table.concat of the arguments' strings.
local function memoize_concat(fn)
  local cache = {}
  return function(...)
    local parts = table.pack(...)
    for i = 1, parts.n do parts[i] = tostring(parts[i]) end
    local k = table.concat(parts, "\0", 1, parts.n)
    local r = cache[k]
    if r == nil then r = fn(...); cache[k] = r end
    return r
  end
end

local lru_memo = require "lru_memo"
-- bench/api_floor.c: what a hit pays through Lua's C API alone
local api_floor = require "bench_api_floor"

-- ---- hits ---------------------------------------------------------------

-- memo_inline: the memo written inline in the loop; memo_fn: the same memo
-- as a function a user would call (the honest baseline: a cached function
-- is called too). target: a note on the hit's target, a number for a time
-- target against memo_fn (issue 18), or a string said as it is.
local function hit_group(name, args, memo_inline, memo_fn, target)
  local f = cr(function(...) return work(...) end, { name = "bench " .. name })
  local nested = memoize_nested(work)
  local concat = memoize_concat(work)
  -- What any C function pays before its own code runs: one that does
  -- next to nothing with the same arguments.
  local noop = #args == 1 and rawlen or rawequal
  -- Each body calls with exactly #args arguments, as a user would.
  local function calling(fn)
    if #args == 1 then
      local a1 = args[1]
      return function(n) for _ = 1, n do fn(a1) end end
    end
    local a1, a2, a3 = table.unpack(args)
    return function(n) for _ = 1, n do fn(a1, a2, a3) end end
  end
  local r = group(name, {
    { "direct call (no cache, the floor)", calling(work) },
    { "hand-written memo, inline", memo_inline },
    { "hand-written memo called through a function", calling(memo_fn), base = true },
    { "generic nested-table memoizer", calling(nested) },
    { "table.concat-key memoizer", calling(concat) },
    { "floor: a no-op C function", calling(noop), note = "no C function can be faster" },
    { "floor: the C API calls of a hit", calling(api_floor.new(work(table.unpack(args)))),
      note = "its arguments' types and values, its state, one registry read: no key, hash or probe" },
    { "cache_resource hit", calling(f) },
  })
  local mine = r["cache_resource hit"]
  mine.row.note = string.format("%.1fx faster than the generic memoizer; %s; %.2fx the C API floor",
    r["generic nested-table memoizer"].ratio / mine.ratio,
    type(target) == "number" and against(mine.ratio, "the memo's time", target, true) or target,
    speedup(r["floor: the C API calls of a hit"], mine))
end

do -- no argument
  local f = cr(function() return {} end, { name = "bench no-arg" })
  local nested = memoize_nested(function() return {} end)
  local memo
  local function get()
    local v = memo
    if v == nil then v = {}; memo = v end
    return v
  end
  local r = group("no argument", {
    { "hand-written memo, inline", function(n)
      for _ = 1, n do local v = memo; if v == nil then v = {}; memo = v end end
    end },
    { "hand-written memo called through a function", function(n) for _ = 1, n do get() end end, base = true },
    { "generic nested-table memoizer", function(n) for _ = 1, n do nested() end end },
    { "cache_resource hit", function(n) for _ = 1, n do f() end end },
  })
  local mine = r["cache_resource hit"]
  mine.row.note = string.format("%.1fx faster than the generic memoizer; %s",
    r["generic nested-table memoizer"].ratio / mine.ratio, against(mine.ratio, "the memo's time", 1.3, true))
end

do -- one short string
  local cache = {}
  local function get(k)
    local v = cache[k]
    if v == nil then v = work(k); cache[k] = v end
    return v
  end
  hit_group("one string", { "users.db" }, function(n)
    for _ = 1, n do
      local k = "users.db"
      local v = cache[k]
      if v == nil then v = work(k); cache[k] = v end
    end
  end, get, "target ≤ 1.05× in instructions (make bench-callgrind)")
end

do -- three mixed scalars
  local cache = {}
  local function get(a, b, c)
    local t1 = cache[a]; if not t1 then t1 = {}; cache[a] = t1 end
    local t2 = t1[b]; if not t2 then t2 = {}; t1[b] = t2 end
    local v = t2[c]
    if v == nil then v = work(a, b, c); t2[c] = v end
    return v
  end
  hit_group("three scalars", { "db", 42, true }, function(n)
    for _ = 1, n do
      local a, b, c = "db", 42, true
      local t1 = cache[a]; if not t1 then t1 = {}; cache[a] = t1 end
      local t2 = t1[b]; if not t2 then t2 = {}; t1[b] = t2 end
      local v = t2[c]
      if v == nil then v = work(a, b, c); t2[c] = v end
    end
  end, get, 1.2)
end

local function table_group(name, arg, n)
  local f = cr(function(t) return work(t) end, { name = "bench " .. name })
  local cache = {}
  group(name, {
    { "table memo keyed by the table's identity", function(k)
      for _ = 1, k do
        local v = cache[arg]
        if v == nil then v = work(arg); cache[arg] = v end
      end
    end, base = true },
    -- A key by content has to read every field at least once.
    { "floor: reading every field (pairs loop)", function(k)
      for _ = 1, k do for _, _ in pairs(arg) do end end
    end, note = "before any hashing" },
    { "cache_resource hit (keyed by content)", function(k) for _ = 1, k do f(arg) end end },
  }, n)
end

do
  local cfg = {}
  for i = 1, 10 do cfg["field" .. i] = i % 3 == 0 and ("v" .. i) or i end
  table_group("10-field table", cfg)
  local arr = {}
  for i = 1, 1000 do arr[i] = i end
  table_group("1000-element array", arr, N // 100)
end

do -- ttl and max_entries
  local cache = {}
  local with_ttl = cr(function(k) return work(k) end, { ttl = "1h", name = "bench ttl" })
  local with_max = cr(function(k) return work(k) end, { max_entries = 100, name = "bench max" })
  group("options (one string)", {
    { "hand-written table memo", function(n)
      for _ = 1, n do
        local k = "users.db"
        local v = cache[k]
        if v == nil then v = work(k); cache[k] = v end
      end
    end, base = true },
    { "cache_resource hit, ttl set", function(n) for _ = 1, n do with_ttl("users.db") end end },
    { "cache_resource hit, max_entries set", function(n) for _ = 1, n do with_max("users.db") end end },
  })
  cr.clear()
end

do -- replay of 10 UI calls
  local sink = {}
  local fns = {}
  for i = 1, 10 do fns[i] = function(s) sink[i] = s end end
  local ui = {}
  for i = 1, 10 do ui[i] = cr.replayable(fns[i], "ui" .. i) end
  local page = cr(function()
    for i = 1, 10 do ui[i]("element " .. i) end
    return true
  end, { name = "bench replay" })
  page()
  local labels = {}
  for i = 1, 10 do labels[i] = "element " .. i end
  group("replay", {
    { "calling the 10 UI functions directly", function(n)
      for _ = 1, n do
        for i = 1, 10 do fns[i](labels[i]) end
      end
    end, base = true },
    { "cache_resource hit replaying 10 UI calls", function(n) for _ = 1, n do page() end end },
  }, N // 10)
  assert(sink[10] == "element 10", "the replay did not reach the UI functions")
end

-- ---- cache_data: copies ------------------------------------------------

-- A cache_data hit decodes a fresh copy. What a user writes instead: a memo
-- that hands out a deep copy of the memoized value; and, as a second
-- baseline, lua-cjson decoding the same data kept as JSON.
do
  local cache_data = cr.data
  local has_cjson, cjson = pcall(require, "cjson")
  local function deep_copy(v)
    if type(v) ~= "table" then return v end
    local t = {}
    for k, x in pairs(v) do t[k] = deep_copy(x) end
    return t
  end
  local function copying_memo(fn)
    local memo = {}
    return function(k)
      local v = memo[k]
      if v == nil then v = fn(k); memo[k] = v end
      return deep_copy(v)
    end
  end
  local function record(i)
    return { id = i, name = "customer " .. i, amount = i * 1.25, paid = i % 3 == 0, region = "r" .. i % 8 }
  end
  local table_rows = {}
  for i = 1, 1000 do table_rows[i] = record(i) end
  local flat = record(7)

  local get_rows = cache_data(function() return table_rows end, { name = "bench data rows" })
  local memo_rows = copying_memo(function() return table_rows end)
  local json = has_cjson and cjson.encode(table_rows)
  local big = { -- 1000 x 5
    { "hand-written memo + deep copy", function(n) for _ = 1, n do memo_rows("rows") end end, base = true },
    { "cache_data hit", function(n) for _ = 1, n do get_rows("rows") end end },
  }
  if has_cjson then
    table.insert(big, 2,
      { "lua-cjson decode of the same data", function(n) for _ = 1, n do cjson.decode(json) end end })
  end
  local r = group("cache_data 1000x5", big, QUICK and 20 or N // 1000)
  local hit = r["cache_data hit"]
  local note = against(speedup(hit, r["hand-written memo + deep copy"]), "faster than the deep copy", 3)
  if has_cjson then
    note = note .. "; " .. against(speedup(hit, r["lua-cjson decode of the same data"]), "faster than lua-cjson", 2)
  else
    note = note .. "; lua-cjson row skipped: the cjson module is not installed (Debian: lua-cjson)"
  end
  hit.row.note = note

  local get_flat = cache_data(function() return flat end, { name = "bench data flat" })
  local memo_flat = copying_memo(function() return flat end)
  r = group("cache_data 5 fields", {
    { "hand-written memo + deep copy", function(n) for _ = 1, n do memo_flat("flat") end end, base = true },
    { "cache_data hit", function(n) for _ = 1, n do get_flat("flat") end end },
  }, N // 10)
  r["cache_data hit"].row.note = against(speedup(r["cache_data hit"], r["hand-written memo + deep copy"]),
    "faster than the deep copy", 1.5)

  -- a miss: keying, encoding the 1000 x 5 result and storing it (the
  -- function itself returns a table it already has)
  local miss_rows = cache_data(function() return table_rows end, { name = "bench data miss" })
  r = group("cache_data miss", {
    { "one deep copy of the 1000x5 table", function(n) for _ = 1, n do deep_copy(table_rows) end end, base = true },
    { "cache_data miss (encodes the result)", function(n)
      for _ = 1, n do
        cr.clear(miss_rows)
        miss_rows("rows")
      end
    end },
  }, QUICK and 20 or N // 1000)
  local miss = r["cache_data miss (encodes the result)"]
  miss.row.note = against(1 / speedup(miss, r["one deep copy of the 1000x5 table"]), "the time of one deep copy",
    1.5, true)
  cache_data.clear()
end

-- ---- misses and scale ----------------------------------------------------

local function rss_kb()
  local f = io.open("/proc/self/statm")
  if not f then return 0 end
  local _, resident = f:read("n", "n")
  f:close()
  return resident * 4
end

-- Misses run the cached function and the memos on a function that returns
-- its argument, so that what is timed is the cache's own work. Keys are
-- short strings ("k" .. i), made before any timing. Every timed round of a
-- miss body starts after a full collection (untimed), so a body does not
-- pay for the garbage another left.
local function identity(k) return k end
local function collect() collectgarbage(); collectgarbage() end
local MISS_N = QUICK and N or N // 4 -- calls per round of the bounded and Zipf groups

do -- bounded misses: every timed call a miss and an eviction
  local KEYS = 1 << 16 -- cycled through; far more than any capacity, so a key is long gone when it comes back
  local MASK = KEYS - 1
  local keys = {}
  for i = 1, KEYS do keys[i] = "k" .. i end
  -- Fills fn to capacity (untimed), then each body(n) goes on through the
  -- keys where the last stopped: the same stream for every variant.
  local function misses(fn, capacity)
    for i = 1, capacity do fn(keys[i]) end
    local pos = capacity
    return function(n)
      for _ = 1, n do
        pos = (pos & MASK) + 1
        fn(keys[pos])
      end
    end
  end
  local CAPACITIES = { 700, 1000, 1024 }
  local variants, cached, bodies = {}, {}, {}
  for _, m in ipairs(CAPACITIES) do
    cached[m] = cr(identity, { max_entries = m, name = "bench miss " .. m })
    bodies[m] = misses(cached[m], m)
    variants[#variants + 1] = { string.format("hand-written LRU memo, %d entries", m),
      misses(lru_memo(identity, m), m), setup = collect }
    variants[#variants + 1] = { string.format("LRU memo adding, then evicting, %d entries", m),
      misses(lru_memo(identity, m, true), m), setup = collect }
    variants[#variants + 1] = { string.format("cache_resource miss, max_entries = %d", m), bodies[m],
      setup = collect }
  end
  local r = group("bounded misses", variants, MISS_N)
  local mine, per_round = {}, {}
  for i, m in ipairs(CAPACITIES) do
    local lru = r[string.format("hand-written LRU memo, %d entries", m)]
    local lru2 = r[string.format("LRU memo adding, then evicting, %d entries", m)]
    mine[i] = r[string.format("cache_resource miss, max_entries = %d", m)]
    lru.row.ratio = 1
    lru2.row.ratio = 1 / speedup(lru2, lru)
    -- against the faster of the two memos at this capacity
    local best = lru2.ns < lru.ns and lru2 or lru
    mine[i].row.ratio = 1 / speedup(mine[i], lru)
    mine[i].row.note = against(1 / speedup(mine[i], best), "the faster LRU memo's time", 1.0, true)
  end
  r["hand-written LRU memo, 700 entries"].row.note = "keys \"k\" .. i, each call a miss + eviction; "
    .. "ratio: to the LRU memo of the same capacity"
  -- The memo's key table is a Lua table: under delete + insert at 1000
  -- live keys (1024 slots) it rehashes every few dozen misses, and at
  -- exactly 1024 at every miss. That is what such a memo costs, and its
  -- rows say so.
  r["hand-written LRU memo, 1000 entries"].row.note = "its key table (1024 slots) rehashes every few dozen misses"
  r["hand-written LRU memo, 1024 entries"].row.note = "its key table, full at 1024 slots, rehashes at every miss"
  -- The spread, from the three capacities timed side by side on their own:
  -- beside the memos, a body also pays for the memory their rehashing
  -- churns through (each starts after a full collection, but the
  -- allocator's state carries over).
  local alone = {}
  for i, m in ipairs(CAPACITIES) do
    alone[i] = { string.format("max_entries = %d, timed alone", m), bodies[m], setup = collect }
  end
  local ra = group("bounded, alone", alone, MISS_N)
  for round = 1, ROUNDS do
    local lo, hi = math.huge, 0
    for _, m in ipairs(CAPACITIES) do
      local sample = ra[string.format("max_entries = %d, timed alone", m)].samples[round]
      lo = math.min(lo, sample)
      hi = math.max(hi, sample)
    end
    per_round[round] = hi / lo
  end
  local spread = median(per_round)
  row("bounded misses", "cache_resource, slowest / fastest capacity", nil, spread,
    against(spread, "between the three capacities", 1.3, true))
  -- A miss allocates nothing that outlives it: over N more misses at
  -- max_entries = 1000 the Lua heap, after a full collection, stays put.
  collect()
  local rss0, lua0 = rss_kb(), collectgarbage("count")
  bodies[1000](N)
  collect()
  local rss1, lua1 = rss_kb(), collectgarbage("count")
  mine[2].row.note = mine[2].row.note .. string.format(
    "; RSS %+d KB, Lua heap %+.0f KB over %d more misses (target heap growth ≈ 0, under 1 KB: %s)",
    rss1 - rss0, lua1 - lua0, N, lua1 - lua0 < 1 and "met" or "NOT met")
  for i, m in ipairs(CAPACITIES) do -- the stream is all misses only while eviction is least recently used
    local hits = cr.stats(cached[m]).hits
    if hits > 0 then
      mine[i].row.note = mine[i].row.note .. string.format("; %d hits: not an all-miss stream", hits)
    end
  end
  cr.clear()
end

do -- unbounded misses: 10^5 keys into an empty cache, every round
  local COUNT = 100000
  local keys = {}
  for i = 1, COUNT do keys[i] = "k" .. i end
  local f = cr(identity, { name = "bench unbounded miss" })
  local memo = {}
  local function get(k)
    local v = memo[k]
    if v == nil then v = identity(k); memo[k] = v end
    return v
  end
  local function misses(fn) return function(n) for i = 1, n do fn(keys[i]) end end end
  local r = group("unbounded misses", {
    { "plain table memo called through a function", misses(get), base = true,
      setup = function() memo = {}; collect() end, note = "a fresh table each round (untimed)" },
    { "cache_resource miss, unbounded", misses(f), setup = function() cr.clear(f); collect() end },
  }, COUNT)
  local mine = r["cache_resource miss, unbounded"]
  mine.row.note = string.format("cr.clear(f) before each round (untimed), %d keys; %s", COUNT,
    against(mine.ratio, "the memo's time", 3, true))
  cr.clear()
end

do -- a Zipf stream: s = 1 over 10^5 keys, capacity 1000
  local RANKS, CAPACITY = 100000, 1000
  local LENGTH = QUICK and 1 << 15 or 1 << 18 -- the sequence, gone through again and again
  local MASK = LENGTH - 1
  local keys, cdf, sum = {}, {}, 0
  for i = 1, RANKS do
    keys[i] = "k" .. i
    sum = sum + 1 / i
    cdf[i] = sum
  end
  -- Ranks drawn by inverse CDF from a fixed 64-bit LCG (Knuth's MMIX
  -- constants; the integer arithmetic wraps), its top 53 bits a uniform
  -- number in [0, 1): the same sequence on every run.
  local seq, state = {}, 42
  for i = 1, LENGTH do
    state = state * 6364136223846793005 + 1442695040888963407
    local u = (state >> 11) * 2.0 ^ -53 * sum
    local lo, hi = 1, RANKS
    while lo < hi do
      local mid = (lo + hi) // 2
      if cdf[mid] < u then lo = mid + 1 else hi = mid end
    end
    seq[i] = keys[lo]
  end
  local function stream(fn)
    local pos = 0
    local function body(n)
      for _ = 1, n do
        pos = (pos & MASK) + 1
        fn(seq[pos])
      end
    end
    body(LENGTH) -- warm: the cache full and in its steady state
    return body
  end
  local f = cr(identity, { max_entries = CAPACITY, name = "bench zipf" })
  local lru = stream(lru_memo(identity, CAPACITY))
  local mine = stream(f)
  local s0 = cr.stats(f)
  local r = group("Zipf(1), 10^5 keys", {
    { "hand-written LRU memo, 1000 entries", lru, base = true, setup = collect,
      note = string.format("the same precomputed sequence of %d keys for both", LENGTH) },
    { "cache_resource, max_entries = 1000", mine, setup = collect },
  }, MISS_N)
  local s1 = cr.stats(f)
  local hits, misses = s1.hits - s0.hits, s1.misses - s0.misses
  local row_mine = r["cache_resource, max_entries = 1000"]
  row_mine.row.note = string.format("hit rate %.1f%%; %s", 100 * hits / (hits + misses),
    against(speedup(row_mine, r["hand-written LRU memo, 1000 entries"]), "faster than the LRU memo", 1.3))
  cr.clear()
end

do
  local BIG = QUICK and 20000 or 1000000
  local small = cr(function(k) return k end, { name = "bench 10 entries" })
  local big = cr(function(k) return k end, { name = "bench 10^6 entries" })
  for i = 1, 10 do small("k" .. i) end
  for i = 1, BIG do big("k" .. i) end
  local small_keys, big_keys = {}, {}
  for i = 1, 1024 do
    small_keys[i] = "k" .. (i * 7919) % 10 + 1
    big_keys[i] = "k" .. (i * 7919) % BIG + 1
  end
  group("scale", {
    { "hit with 10 entries", function(n) for i = 1, n do small(small_keys[(i & 1023) + 1]) end end, base = true },
    { string.format("hit with %d entries", BIG), function(n) for i = 1, n do big(big_keys[(i & 1023) + 1]) end end },
  })
  cr.clear()
  big, small = nil, nil
  -- The same access pattern on plain Lua tables: what memory alone costs.
  local t_small, t_big, s_small, s_big = {}, {}, {}, {}
  for i = 1, 10 do t_small["k" .. i] = { i } end
  for i = 1, BIG do t_big["k" .. i] = { i } end
  for i = 1, 1024 do
    s_small[i] = small_keys[i]
    s_big[i] = big_keys[i]
  end
  group("scale (Lua table)", {
    { "plain table lookup, 10 string keys", function(n)
      local v
      for i = 1, n do v = t_small[s_small[(i & 1023) + 1]] end
      return v
    end, base = true, note = "what memory alone costs, for comparison" },
    { string.format("plain table lookup, %d string keys", BIG), function(n)
      local v
      for i = 1, n do v = t_big[s_big[(i & 1023) + 1]] end
      return v
    end },
  })
  t_big = nil
  collectgarbage()
end

-- ---- waiting for another coroutine's build ------------------------------

-- 50 coroutines ask for a key while a 51st builds it (a 1-second cqueues
-- sleep; 0.1 s under QUICK): CPU time (os.clock) of the whole episode with
-- the cqueues scheduler (each waiter parks once on a condition variable)
-- and with a polling waiter (cqueues.sleep(0) in a loop). Round by round,
-- like the groups above; the ratio is the median of per-round ratios.
do
  local ok, cqueues = pcall(require, "cqueues")
  if ok then
    local adapter = require "cache_resource.cqueues"
    local BUILD, WAITERS, WROUNDS = QUICK and 0.1 or 1.0, 50, QUICK and 2 or 3
    local function episode(mode, round)
      local build = cr(function() cqueues.sleep(BUILD); return {} end, { name = "bench wait " .. mode .. round })
      if mode == "scheduler" then
        adapter.install()
        cr.set_waiter(nil)
      else
        cr.set_scheduler(nil)
        cr.set_waiter(function() cqueues.sleep(0) end)
      end
      local cq = cqueues.new()
      local got = {}
      for i = 1, WAITERS + 1 do cq:wrap(function() got[i] = build() end) end
      local t0 = clock()
      assert(cq:loop())
      local cpu = clock() - t0
      for i = 2, WAITERS + 1 do assert(got[i] == got[1]) end
      return cpu
    end
    local sched, poll, ratios = {}, {}, {}
    for r = 1, WROUNDS do
      poll[r] = episode("polling", r)
      sched[r] = episode("scheduler", r)
      ratios[r] = sched[r] / poll[r]
    end
    cr.set_scheduler(nil)
    cr.set_waiter(nil)
    cr.clear()
    local s_cpu, p_cpu, ratio = median(sched), median(poll), median(ratios)
    local g = string.format("waiting, %gs build", BUILD)
    row(g, string.format("%d coroutines, polling waiter", WAITERS), p_cpu * 1e9 / WAITERS, 1,
      string.format("CPU %.0f ms in all (ns/call: per waiter)", p_cpu * 1e3))
    row(g, string.format("%d coroutines, cache_resource.cqueues", WAITERS), s_cpu * 1e9 / WAITERS, ratio,
      string.format("CPU %.2f ms in all, %.2f%% of polling; target < 1%% and < 10 ms: %s", s_cpu * 1e3,
        ratio * 100, (ratio < 0.01 and s_cpu < 0.010) and "met" or "NOT met"))
  end
end

do -- bytes per entry: each variant in a fresh process, so RSS is its own
  local COUNTS = QUICK and { 20000 } or { 100000, 1000000 }
  local function measure(variant, count)
    local p = assert(io.popen(string.format("%s bench/bench_memory.lua %s %d", arg[-1] or "lua5.4", variant, count)))
    local rss, heap = p:read("n", "n")
    p:close()
    return rss or 0, heap or 0
  end
  for _, count in ipairs(COUNTS) do
    local m_rss, m_heap = measure("memo", count)
    local c_rss, c_heap = measure("cache_resource", count)
    row("bytes per entry", string.format("plain table memo, %d string keys", count), nil, nil,
      string.format("RSS %.0f B, Lua heap %.0f B per entry (table values, after a full collection)", m_rss, m_heap))
    row("bytes per entry", string.format("cache_resource, %d string keys", count), nil, nil,
      string.format("RSS %.0f B, Lua heap %.0f B per entry; %s; %s", c_rss, c_heap,
        against(c_rss / m_rss, "the memo's RSS", 2, true), against(c_heap / m_heap, "the memo's Lua heap", 1.2, true)))
  end
end

do -- session-scoped hits against a per-session memo, the session set once
  -- A run sets its session once and then calls: both variants have it set
  -- before the timed loop (cr.set_session for mine, the variable the memo
  -- reads for the memo), so what is timed is the hit itself, not a
  -- set_session call beside a variable assignment ("sessions" below times
  -- set_session + hit).
  local SESSIONS = 10
  local f = cr(function(k) return work(k) end, { scope = "session", name = "bench session hit" })
  local per_session, session_id = {}, nil
  local function get(k)
    local memo = per_session[session_id]
    if memo == nil then memo = {}; per_session[session_id] = memo end
    local v = memo[k]
    if v == nil then v = work(k); memo[k] = v end
    return v
  end
  for i = 1, SESSIONS do -- the same 10 sessions with an entry each in both
    session_id = "user" .. i
    cr.set_session(session_id)
    f("users.db"); get("users.db")
  end
  session_id = "user3"
  cr.set_session(session_id)
  local a1 = "users.db"
  local r = group("session hit", {
    { "per-session memo called through a function", function(n) for _ = 1, n do get(a1) end end, base = true,
      note = "memo[session_id][k], session_id a variable set before the loop" },
    { "cache_resource hit, scope = session", function(n) for _ = 1, n do f(a1) end end },
  })
  local mine = r["cache_resource hit, scope = session"]
  mine.row.note = "cr.set_session before the loop; " .. against(mine.ratio, "the memo's time", 1.3, true)
  cr.set_session(nil)
  for i = 1, SESSIONS do cr.end_session("user" .. i) end
end

do -- session-scoped hits: 10 live sessions, then 10^5, round by round
  local MANY = QUICK and 10000 or 100000
  local f = cr(function(k) return k end, { scope = "session", name = "bench sessions" })
  local ids = {}
  for i = 1, 10 do ids[i] = "user" .. (i * 7919 % MANY + 1) end -- the same 10 in both
  local seq = {}
  for i = 1, 1024 do seq[i] = ids[(i * 31) % 10 + 1] end
  -- each call switches the session first, as a re-run for another user does
  local function body(n)
    for i = 1, n do
      cr.set_session(seq[(i & 1023) + 1])
      f(1)
    end
  end
  local function live(count) -- opens sessions user1..count with an entry each, ends the rest
    for i = 1, count do cr.set_session("user" .. i); f(1) end
    for i = count + 1, MANY do cr.end_session("user" .. i) end
    for _, id in ipairs(ids) do cr.set_session(id); f(1) end
    cr.set_session(nil)
  end
  local few, many = {}, {}
  live(0); body(N // 10)
  live(MANY); body(N // 10)
  for r = 1, ROUNDS do -- untimed: bringing sessions up and down between the timed parts
    live(0)
    local t0 = clock(); body(N); few[r] = (clock() - t0) * 1e9 / N
    live(MANY)
    t0 = clock(); body(N); many[r] = (clock() - t0) * 1e9 / N
  end
  local ratios = {}
  for r = 1, ROUNDS do ratios[r] = many[r] / few[r] end
  row("sessions", "set_session + hit, 10 live sessions", median(few), 1.0,
    "the same 10 sessions are used in both")
  row("sessions", string.format("set_session + hit, %d live sessions", MANY), median(many), median(ratios))
  live(0)
  cr.clear()
end

-- ---- the SQLite store ----------------------------------------------------

assert(loadfile("bench/bench_sqlite.lua"))(group, QUICK)

-- ---- report --------------------------------------------------------------

local uname = io.popen("uname -srm"):read("l") or "?"
local cpu = "?"
local f = io.open("/proc/cpuinfo")
if f then
  for line in f:lines() do
    local m = line:match("^model name%s*:%s*(.+)$")
    if m then cpu = m; break end
  end
  f:close()
end
print(string.format("cache_resource bench — %s, %s, %s, %d calls x %d rounds (median)%s",
  _VERSION, uname, cpu, N, ROUNDS, QUICK and " [QUICK]" or ""))
print()
print(string.format("| %-20s | %-44s | %9s | %7s | %s", "case", "variant", "ns/call", "ratio", "note"))
print("|" .. string.rep("-", 22) .. "|" .. string.rep("-", 46) .. "|" .. string.rep("-", 11)
  .. "|" .. string.rep("-", 9) .. "|------")
local last
for _, r in ipairs(rows) do
  print(string.format("| %-20s | %-44s | %9s | %7s | %s", r.group ~= last and r.group or "", r.name,
    r.ns and string.format("%.1f", r.ns) or "",
    r.ratio and string.format("%.2fx", r.ratio) or "", r.note or ""))
  last = r.group
end
