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
function M.table_store(description)
  local entries, gens, everything = {}, {}, 0
  local store = setmetatable({ calls = {}, entries = entries }, {
    __tostring = function() return description or "a Lua table" end,
  })
  local function note(...) store.calls[#store.calls + 1] = table.pack(...) end
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

return M
