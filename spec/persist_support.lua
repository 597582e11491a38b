-- What the persist specs and their child processes share: the values a
-- persisted function returns (every kind of value a copy keeps exactly), a
-- strict comparison, a store kept in a Lua table that records its calls,
-- and a way for a child to hand its results back.
local cr = require "cache_resource"

local M = {}

M.Point = { __name = "spec.Point" }
cr.data.register_metatable("spec.Point", M.Point)

-- The values of key i: a table with a registered metatable, float bits
-- (-0.0, a NaN, an infinity), integers at the edge, strings with NULs, a
-- table reached twice and a cycle; then an integer and a trailing nil.
function M.value(i)
  local shared = { i, "s" .. i }
  local t = setmetatable({
    id = i, half = i + 0.5, neg0 = -0.0, nan = 0 / 0, inf = math.huge, big = math.maxinteger - i,
    bytes = "a\0b" .. i, list = { 1, 2.0, "three", true, false }, a = shared, b = shared,
  }, M.Point)
  t.self = t
  return t, i * 2, nil
end

-- Whether two value lists are the same: types, integer and float subtypes,
-- float bits, bytes, metatables, and the sharing graph (a one-to-one map
-- between the tables of both sides).
function M.same(a, b)
  local seen_ab, seen_ba = {}, {}
  local function eq(x, y)
    if type(x) ~= type(y) then return false end
    if type(x) == "number" then
      return math.type(x) == math.type(y) and string.pack("<n", x) == string.pack("<n", y)
    end
    if type(x) ~= "table" then return x == y end
    if seen_ab[x] ~= nil or seen_ba[y] ~= nil then return seen_ab[x] == y and seen_ba[y] == x end
    seen_ab[x], seen_ba[y] = y, x
    if getmetatable(x) ~= getmetatable(y) then return false end
    for k, v in next, x do
      if type(k) == "table" then return false end -- no table keys in these values
      if not eq(v, rawget(y, k)) then return false end
    end
    for k in next, y do
      if rawget(x, k) == nil then return false end
    end
    return true
  end
  if a.n ~= b.n then return false end
  for i = 1, a.n do
    if not eq(a[i], b[i]) then return false end
  end
  return true
end

-- A store over a Lua table, as a user writes one, recording each call as
-- { method, args... } in store.calls. Expiry is not kept (no spec here
-- needs it). store.keep = true makes delete and clear change nothing (a
-- clear of memory alone, as a restart is).
local made = setmetatable({}, { __mode = "k" })
function M.table_store(description)
  local entries, gens, everything = {}, {}, 0
  local store = setmetatable({ calls = {}, entries = entries }, {
    __tostring = function() return description or "a Lua table" end,
  })
  made[store] = true
  local function note(...)
    if not store.retired then store.calls[#store.calls + 1] = table.pack(...) end
  end
  function store:get(ns, key)
    note("get", ns, key)
    return entries[ns .. "/" .. key]
  end
  function store:set(ns, key, bytes, ttl, limits)
    note("set", ns, key, bytes, ttl, limits)
    entries[ns .. "/" .. key] = bytes
    return true
  end
  function store:delete(ns, key)
    note("delete", ns, key)
    if store.keep then return true end
    entries[ns .. "/" .. key] = nil
    return true
  end
  function store:clear(ns)
    note("clear", ns)
    if store.keep then return true end
    for k in pairs(entries) do
      if ns == nil or k:sub(1, #ns) == ns then entries[k] = nil end
    end
    if ns then gens[ns] = (gens[ns] or 0) + 1 else everything = everything + 1 end
    return true
  end
  function store:generation(ns)
    note("generation", ns)
    return everything + (gens[ns] or 0)
  end
  -- the calls of one method, in order
  function store.of(method)
    local out = {}
    for _, c in ipairs(store.calls) do
      if c[1] == method then out[#out + 1] = c end
    end
    return out
  end
  return store
end

-- Empties every table store made so far and stops them recording: the
-- functions a spec wrapped keep their store until the end of the run (a
-- cache lives as long as the module), and later clears call them all.
function M.retire_stores()
  for store in pairs(made) do
    store.retired = true
    store.calls = {}
    for k in pairs(store.entries) do store.entries[k] = nil end
  end
end

-- A child's results: a flat table of numbers, strings and booleans written
-- as a Lua chunk on stdout, between marks (anything else the child prints
-- stays out).
function M.emit(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = ("[%q] = %q"):format(k, tostring(t[k])) end
  io.write("<<<return {", table.concat(parts, ", "), "}>>>\n")
end

-- The table a child emitted, or an error showing all it printed.
function M.results(out)
  local chunk = out:match("<<<(.-)>>>")
  assert(chunk, "the child emitted no results:\n" .. out)
  local t = assert(load(chunk, "=child", "t"))()
  for k, v in pairs(t) do t[k] = tonumber(v) or (v == "true" and true) or (v == "false" and false) or v end
  return t
end

-- Child processes that share one store (the Lua expression `store`, which
-- makes it) and meet through files in `dir`: process 1 computes key 1 and
-- says so; the others read it from the store; then process 1 clears the
-- function and the others call it until their copy changes, and emit how
-- long after the clear that was (`delay`), what they read first and
-- after, and their counters. For support.lua_children, 3 or more copies.
function M.clear_children(store, dir)
  return ([[
    local cr = require "cache_resource"
    local ps = require "persist_support"
    local socket = require "socket"
    local store = assert(%s)
    local me = tonumber(arg[1])
    local dir = %q
    local function signal(name, text)
      local f = assert(io.open(dir .. "/" .. name, "w")); f:write(text or ""); f:close()
    end
    local function wait(name)
      local deadline = socket.gettime() + 30
      while socket.gettime() < deadline do
        local f = io.open(dir .. "/" .. name)
        if f then local s = f:read("a"); f:close(); return s end
        socket.sleep(0.01)
      end
      error("no " .. name)
    end
    local n = tonumber(wait("count"))
    local who = { me = me } -- not a scalar upvalue: the same function (identity) in every process
    local f = cr.data(function(i) return "computed by " .. who.me .. " #" .. i end, { persist = store })
    if me == 1 then
      assert(f(1) == "computed by 1 #1")
      signal("stored")
      for i = 2, n do wait("seen" .. i) end
      cr.clear(f)
      signal("cleared", ("%%.6f"):format(socket.gettime()))
      ps.emit({ ok = true })
    else
      wait("stored")
      local first = f(1)
      signal("seen" .. me)
      local cleared = tonumber(wait("cleared"))
      local v = f(1)
      while v == first and socket.gettime() < cleared + 10 do
        socket.sleep(0.01)
        v = f(1)
      end
      local s = cr.stats(f)
      ps.emit({ first = first, after = v, delay = socket.gettime() - cleared, store_hits = s.store_hits,
        store_errors = s.store_errors })
    end
  ]]):format(store, dir)
end

-- `k` child processes that share one store (`store`, as above) and call
-- the same function for keys 1..n at the same moment (each waits for the
-- others' files in `dir` first): each emits how many values were not
-- exact, and its counters.
function M.racing_children(store, dir, n, k)
  return ([[
    local cr = require "cache_resource"
    local ps = require "persist_support"
    local socket = require "socket"
    local store = assert(%s)
    local me, dir, n, k = tonumber(arg[1]), %q, %d, %d
    local f = cr.data(function(i) socket.sleep(0.001); return ps.value(i) end, { persist = store })
    assert(io.open(dir .. "/ready" .. me, "w")):close()
    local deadline = socket.gettime() + 30
    local function exists(path)
      local f = io.open(path)
      if f then f:close() end
      return f ~= nil
    end
    for j = 1, k do
      while socket.gettime() < deadline and not exists(dir .. "/ready" .. j) do socket.sleep(0.001) end
    end
    local bad = 0
    for i = 1, n do
      if not ps.same(table.pack(ps.value(i)), table.pack(f(i))) then bad = bad + 1 end
    end
    local s = cr.stats(f)
    ps.emit({ bad = bad, misses = s.misses, store_hits = s.store_hits, store_errors = s.store_errors })
  ]]):format(store, dir, n, k)
end

-- Checks what racing_children's processes emitted: each ended well, read
-- only exact values, met no store error, and had each of the n keys
-- either computed or found in the store.
function M.check_race(assert, outs, statuses, n)
  for i = 1, #outs do
    assert.equal(0, statuses[i], outs[i])
    local r = M.results(outs[i])
    assert.same({ 0, 0, n }, { r.bad, r.store_errors, r.misses + r.store_hits })
  end
end

return M
