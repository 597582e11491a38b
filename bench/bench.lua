-- make bench: cache_resource against the alternatives a Lua developer would
-- pick, side by side in one process. Prints ns per call (median of several
-- rounds) and ratios. `QUICK=1` runs a short version (a smoke test: CI makes
-- no timing assertions).
package.path = "lua/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local cr = require "cache_resource"

local QUICK = os.getenv("QUICK") == "1"
local N = QUICK and 20000 or 1000000      -- calls per round
local ROUNDS = QUICK and 3 or 7
local clock = os.clock

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

-- ns per call of body(n), which must make n calls.
local function measure(body, n)
  n = n or N
  body(math.max(1, n // 10)) -- warm up
  local samples = {}
  for r = 1, ROUNDS do
    local t0 = clock()
    body(n)
    samples[r] = (clock() - t0) * 1e9 / n
  end
  return median(samples)
end

local rows = {}
local function row(group, name, ns, base, note)
  rows[#rows + 1] = { group = group, name = name, ns = ns, ratio = base and ns / base, note = note }
  return ns
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

-- ---- hits ---------------------------------------------------------------

local function hit_group(group, args, memo_call)
  local f = cr(function(...) return work(...) end, { name = "bench " .. group })
  local nested = memoize_nested(work)
  local concat = memoize_concat(work)
  local a1, a2, a3 = table.unpack(args)
  local base = measure(memo_call)
  row(group, "direct call (no cache, the floor)", measure(function(n) for _ = 1, n do work(a1, a2, a3) end end), base)
  row(group, "hand-written table memo", base, base)
  local generic = row(group, "generic nested-table memoizer", measure(function(n) for _ = 1, n do nested(a1, a2, a3) end end), base)
  row(group, "table.concat-key memoizer", measure(function(n) for _ = 1, n do concat(a1, a2, a3) end end), base)
  -- What any callable object pays before its own code runs: a C function
  -- that does nothing, reached through __call as a cached function is.
  local callable = setmetatable({}, { __call = rawequal })
  row(group, "floor: a no-op C function through __call", measure(function(n) for _ = 1, n do callable(a1, a2, a3) end end),
    base, "no cache object can be faster")
  local mine = row(group, "cache_resource hit", measure(function(n) for _ = 1, n do f(a1, a2, a3) end end), base)
  rows[#rows].note = string.format("%.1fx faster than the generic memoizer", generic / mine)
end

do -- no argument
  local f = cr(function() return {} end, { name = "bench no-arg" })
  local memo
  local base = measure(function(n) for _ = 1, n do local v = memo; if v == nil then v = {}; memo = v end end end)
  row("no argument", "hand-written memo (one upvalue)", base, base)
  row("no argument", "cache_resource hit", measure(function(n) for _ = 1, n do f() end end), base)
end

do -- one short string
  local cache = {}
  hit_group("one string", { "users.db" }, function(n)
    for _ = 1, n do
      local k = "users.db"
      local v = cache[k]
      if v == nil then v = work(k); cache[k] = v end
    end
  end)
end

do -- three mixed scalars
  local cache = {}
  hit_group("three scalars", { "db", 42, true }, function(n)
    for _ = 1, n do
      local a, b, c = "db", 42, true
      local t1 = cache[a]; if not t1 then t1 = {}; cache[a] = t1 end
      local t2 = t1[b]; if not t2 then t2 = {}; t1[b] = t2 end
      local v = t2[c]
      if v == nil then v = work(a, b, c); t2[c] = v end
    end
  end)
end

local function table_group(group, arg)
  local f = cr(function(t) return work(t) end, { name = "bench " .. group })
  local cache = {}
  local base = measure(function(n)
    for _ = 1, n do
      local v = cache[arg]
      if v == nil then v = work(arg); cache[arg] = v end
    end
  end)
  row(group, "table memo keyed by the table's identity", base, base)
  -- A key by content has to read every field at least once.
  row(group, "floor: reading every field (pairs loop)", measure(function(n)
    for _ = 1, n do for _, _ in pairs(arg) do end end
  end), base, "before any hashing")
  row(group, "cache_resource hit (keyed by content)", measure(function(n) for _ = 1, n do f(arg) end end), base)
end

do
  local cfg = {}
  for i = 1, 10 do cfg["field" .. i] = i % 3 == 0 and ("v" .. i) or i end
  table_group("10-field table", cfg)
  local arr = {}
  for i = 1, 1000 do arr[i] = i end
  local saved = N
  N = N // 100
  table_group("1000-element array", arr)
  N = saved
end

do -- ttl and max_entries
  local cache = {}
  local base = measure(function(n)
    for _ = 1, n do
      local k = "users.db"
      local v = cache[k]
      if v == nil then v = work(k); cache[k] = v end
    end
  end)
  local with_ttl = cr(function(k) return work(k) end, { ttl = "1h", name = "bench ttl" })
  local with_max = cr(function(k) return work(k) end, { max_entries = 100, name = "bench max" })
  row("options (one string)", "hand-written table memo", base, base)
  row("options (one string)", "cache_resource hit, ttl set", measure(function(n) for _ = 1, n do with_ttl("users.db") end end), base)
  row("options (one string)", "cache_resource hit, max_entries set", measure(function(n) for _ = 1, n do with_max("users.db") end end), base)
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
  local base = measure(function(n)
    for _ = 1, n do
      for i = 1, 10 do fns[i](labels[i]) end
    end
  end, N // 10)
  row("replay", "calling the 10 UI functions directly", base, base)
  row("replay", "cache_resource hit replaying 10 UI calls", measure(function(n) for _ = 1, n do page() end end, N // 10), base)
end

-- ---- misses and scale ----------------------------------------------------

local function rss_kb()
  local f = io.open("/proc/self/statm")
  if not f then return 0 end
  local _, resident = f:read("n", "n")
  f:close()
  return resident * 4
end

do
  local MISSES = QUICK and 20000 or 1000000
  local f = cr(function(k) return k end, { max_entries = 1000, name = "bench churn" })
  for i = 1, 1000 do f(-i) end
  collectgarbage(); collectgarbage()
  local rss0, lua0 = rss_kb(), collectgarbage("count")
  local t0 = clock()
  for i = 1, MISSES do f(i) end
  local per = (clock() - t0) * 1e9 / MISSES
  collectgarbage(); collectgarbage()
  local rss1, lua1 = rss_kb(), collectgarbage("count")
  row("misses", string.format("%d distinct keys, max_entries = 1000", MISSES), per, nil,
    string.format("RSS %+d KB, Lua heap %+.0f KB over the run", rss1 - rss0, lua1 - lua0))
  cr.clear()
end

do
  local BIG = QUICK and 20000 or 1000000
  local small = cr(function(k) return k end, { name = "bench 10 entries" })
  local big = cr(function(k) return k end, { name = "bench 10^6 entries" })
  for i = 1, 10 do small(i) end
  for i = 1, BIG do big(i) end
  local keys = {}
  for i = 1, 1024 do keys[i] = (i * 7919) % 10 + 1 end
  local t10 = measure(function(n) for i = 1, n do small(keys[(i & 1023) + 1]) end end)
  for i = 1, 1024 do keys[i] = (i * 7919) % BIG + 1 end
  local tbig = measure(function(n) for i = 1, n do big(keys[(i & 1023) + 1]) end end)
  row("scale", "hit with 10 entries", t10, t10)
  row("scale", string.format("hit with %d entries", BIG), tbig, t10)
  cr.clear()
  big, small = nil, nil
  -- The same access pattern on plain Lua tables: what memory alone costs.
  local t_small, t_big, skeys = {}, {}, {}
  for i = 1, 10 do t_small["k" .. i] = { i } end
  for i = 1, BIG do t_big["k" .. i] = { i } end
  for i = 1, 1024 do skeys[i] = "k" .. ((i * 7919) % 10 + 1) end
  local l10 = measure(function(n) local v; for i = 1, n do v = t_small[skeys[(i & 1023) + 1]] end; return v end)
  for i = 1, 1024 do skeys[i] = "k" .. ((i * 7919) % BIG + 1) end
  local lbig = measure(function(n) local v; for i = 1, n do v = t_big[skeys[(i & 1023) + 1]] end; return v end)
  row("scale (Lua table)", "plain table lookup, 10 string keys", l10, l10, "the memory floor, for comparison")
  row("scale (Lua table)", string.format("plain table lookup, %d string keys", BIG), lbig, l10)
  t_big = nil
  collectgarbage()
end

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
print("|" .. string.rep("-", 22) .. "|" .. string.rep("-", 46) .. "|" .. string.rep("-", 11) .. "|" .. string.rep("-", 9) .. "|------")
local last
for _, r in ipairs(rows) do
  print(string.format("| %-20s | %-44s | %9.1f | %7s | %s", r.group ~= last and r.group or "", r.name, r.ns,
    r.ratio and string.format("%.2fx", r.ratio) or "", r.note or ""))
  last = r.group
end
