-- Invariants checked on every fuzz input (see fuzz/fuzz_keys.c):
--  1. building the same value twice, with a different insertion order,
--     gives the same key (cache_resource.hash);
--  2. a value changed in one place gives a different key;
--  3. the replay recorder copies arguments exactly (round trip), both when
--     the C loop decodes a buffer and when it is replayed compiled;
--  4. nothing crashes, whatever the value (cycles, NUL bytes, NaN, -0.0,
--     huge integers, metatables with __name, deep nesting).
local cr = require "cache_resource"

local Reader = {}
Reader.__index = Reader
local function reader(s) return setmetatable({ s = s, i = 1 }, Reader) end
function Reader:byte()
  local b = self.s:byte(self.i) or 0
  self.i = self.i + 1
  return b
end
function Reader:left() return #self.s - self.i + 1 end

local SPECIALS = { 0 / 0, -(0 / 0), 0.0, -0.0, math.huge, -math.huge, math.maxinteger, math.mininteger,
  1.5, 2 ^ 53, -1, 0 }
local NAMES = { "Point", "Vec", "FILE*", "" }

-- Builds a description (a plain tree) first, so the same value can be
-- materialized twice with different insertion orders.
local function describe(r, depth)
  local k = r:byte() % 9
  if r:left() <= 0 then k = 0 end
  if k == 0 then return { "nil" }
  elseif k == 1 then return { "bool", r:byte() % 2 == 1 }
  elseif k == 2 then
    local v = 0
    for _ = 1, 8 do v = (v << 8) | r:byte() end
    return { "int", v }
  elseif k == 3 then return { "num", SPECIALS[r:byte() % #SPECIALS + 1] }
  elseif k == 4 then
    local n = r:byte() % 12
    local chars = {}
    for i = 1, n do chars[i] = string.char(r:byte()) end -- NULs included
    return { "str", table.concat(chars) }
  elseif k == 5 and depth < 6 then
    local n = r:byte() % 6
    local arr, pairs_ = {}, {}
    for i = 1, n do arr[i] = describe(r, depth + 1) end
    local m = r:byte() % 6
    for i = 1, m do pairs_[i] = { describe(r, depth + 1), describe(r, depth + 1) } end
    local name = r:byte() % 5
    return { "table", arr, pairs_, name > 0 and NAMES[name] or nil }
  elseif k == 6 then return { "cycle", r:byte() % 3 }
  elseif k == 7 then return { "float", (r:byte() - 128) / 7 }
  end
  return { "str", "s" .. r:byte() }
end

-- Materializes a description; `reverse` inserts hash pairs backwards.
local function build(d, reverse, path)
  path = path or {}
  local tag = d[1]
  if tag == "nil" then return nil
  elseif tag == "bool" or tag == "int" or tag == "num" or tag == "str" or tag == "float" then return d[2]
  elseif tag == "cycle" then return path[#path - d[2]] or "no-ancestor"
  end
  local t = {}
  if d[4] then setmetatable(t, { __name = d[4] }) end
  path[#path + 1] = t
  local arr = {}
  for i, sub in ipairs(d[2]) do arr[i] = build(sub, reverse, path) end
  local n = #d[2]
  for i = reverse and n or 1, reverse and 1 or n, reverse and -1 or 1 do
    if arr[i] ~= nil then t[i] = arr[i] end
  end
  local kv = {}
  for i, p in ipairs(d[3]) do kv[i] = { build(p[1], reverse, path), build(p[2], reverse, path) } end
  local m = #kv
  for i = reverse and m or 1, reverse and 1 or m, reverse and -1 or 1 do
    local k, v = kv[i][1], kv[i][2]
    -- a key may not be nil or NaN; the first writer of a key wins in both orders
    if k ~= nil and k == k and v ~= nil and rawget(t, k) == nil then
      local first = true
      for j = 1, m do
        if kv[j][1] == k and j < i then first = false end
      end
      if first then rawset(t, k, v) end
    end
  end
  path[#path] = nil
  return t
end

local function safe_hash(...)
  local ok, h = pcall(cr.hash, ...)
  if ok then return h end
  -- the only refusals possible here: nesting, never a crash or another error
  assert(tostring(h):find("nested deeper", 1, true), "unexpected hash error: " .. tostring(h))
  return nil
end

-- Exact deep equality, as a replay must reproduce arguments: floats bit for
-- bit (a NaN's sign, -0.0), int ~= float.
local function same(a, b, seen)
  if type(a) ~= type(b) then return false end
  if type(a) == "number" then
    if math.type(a) ~= math.type(b) then return false end
    if math.type(a) == "float" then return string.pack("<d", a) == string.pack("<d", b) end
    return a == b
  end
  if type(a) ~= "table" then return a == b end
  seen = seen or {}
  if seen[a] then return seen[a] == b end
  seen[a] = b
  local na, nb = 0, 0
  for _ in pairs(b) do nb = nb + 1 end
  for k, v in pairs(a) do
    na = na + 1
    if type(k) ~= "table" then
      if not same(v, rawget(b, k), seen) then return false end
    else -- a copied table key is another table: match it by content
      local found = false
      for k2, v2 in pairs(b) do
        -- trials: fresh memo
        if type(k2) == "table" and same(k, k2, {}) and same(v, v2, {}) then found = true; break end
      end
      if not found then return false end
    end
  end
  return na == nb
end

cr.set_replay_compile(2) -- the first replay decodes, the second compiles
local recorded = {}
local record = cr.replayable(function(...) recorded[#recorded + 1] = table.pack(...) end, "fuzz.record")
local replay_probe = cr(function(_label, v) record(v); return true end, { name = "fuzz replay" })

local function plain(v, seen)
  if type(v) ~= "table" then return true end
  seen = seen or {}
  if seen[v] or getmetatable(v) then return false end
  seen[v] = true
  for k, x in pairs(v) do
    if not plain(k, seen) or not plain(x, seen) then return false end
  end
  seen[v] = nil
  return true
end

local counter = 0
function fuzz_one(data, debug_print)
  local d = describe(reader(data), 0)
  local a, b = build(d, false), build(d, true)
  local ha, hb = safe_hash(a), safe_hash(b)
  assert(ha == hb, "equal values gave different keys")
  if ha then
    -- 2. a changed value gives a different key
    local changed = type(a) == "table" and a or { a }
    local marker = {}
    rawset(changed, marker, true) -- a new pair: a different value
    local hc = safe_hash(changed)
    if type(a) == "table" then rawset(changed, marker, nil) end
    if hc then assert(hc ~= ha, "a changed table kept its key") end
    assert(safe_hash(a, 1) ~= ha, "an extra argument kept the key")
  end
  -- 3. the replay recorder round-trips copyable arguments exactly
  if plain(a) and ha then
    counter = counter + 1
    recorded = {}
    replay_probe(counter, a)   -- live: records
    replay_probe(counter, a)   -- hit: the C loop replays the buffer
    replay_probe(counter, a)   -- hit: a compiled function replays it
    assert(#recorded == 3, "expected a live call and two replays")
    if debug_print then debug_print(a, recorded[1][1], recorded[2][1], recorded[3][1]) end
    assert(same(recorded[1][1], recorded[2][1]), "replay did not copy the argument exactly")
    assert(same(recorded[1][1], recorded[3][1]), "compiled replay did not copy the argument exactly")
    if counter % 256 == 0 then cr.clear() end
  end
end
