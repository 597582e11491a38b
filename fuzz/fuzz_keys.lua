-- Invariants checked on every fuzz input (see fuzz/fuzz_host.c):
--  1. building the same argument list twice, with a different insertion
--     order, gives the same canonical bytes (cache_resource.key_bytes) and
--     the same digest (cache_resource.hash);
--  2. a value changed in one place gives a different key;
--  3. the canonical bytes decode (spec/keydecode.lua) to exactly the
--     argument list they came from; with a byte cut off or appended they
--     are refused, or (when the byte is a whole one-byte value) decode to a
--     shorter or longer list, never to the same one;
--  4. the replay recorder copies arguments exactly (round trip), both when
--     the C loop decodes a buffer and when it is replayed compiled;
--  5. nothing crashes, whatever the values (cycles, NUL bytes, NaN, -0.0,
--     huge integers, metatables with __name, closures with scalar upvalues
--     at any index, C closures, cached functions, deep nesting).
package.path = "spec/?.lua;fuzz/?.lua;" .. package.path
local cr = require "cache_resource"
local kd = require "keydecode"
local reader = require("reader").new

local SPECIALS = { 0 / 0, -(0 / 0), 0.0, -0.0, math.huge, -math.huge, math.maxinteger, math.mininteger,
  1.5, 2 ^ 53, -1, 0 }
local NAMES = { "Point", "Vec", "FILE*", "", "Point\0v2" }

-- Closures of two codes with 16 upvalues each, any of which may be a
-- scalar (part of the key) or a table (not part of it).
local UPVALUES = 16
local FACTORIES = {}
do
  local names = {}
  for i = 1, UPVALUES do names[i] = "u" .. i end
  local list = table.concat(names, ", ")
  FACTORIES[1] = assert(load("local " .. list .. " = ...; return function() return " .. list .. " end", "=fuzz1"))
  FACTORIES[2] = assert(load("local " .. list .. " = ...; return function() return { " .. list .. " } end", "=fuzz2"))
end
local CACHED = cr(function() return 1 end, { name = "fuzz cached" })
local C_FUNCTIONS = {
  function() return print end,
  function() return string.format end,
  function() return ("a b"):gmatch("%a") end, -- a C closure with scalar upvalues
  function() return CACHED end,
}

-- Builds a description (a plain tree) first, so the same value can be
-- materialized twice with different insertion orders.
local function describe(r, depth)
  local k = r:byte() % 11
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
  elseif k == 8 then
    local ups = {}
    for i = 1, UPVALUES do
      local b = r:byte()
      if b < 64 then ups[i] = { "table" }
      elseif b < 128 then ups[i] = { "nil" }
      elseif b < 160 then ups[i] = { "bool", b % 2 == 1 }
      elseif b < 208 then ups[i] = { "int", b }
      else ups[i] = { "str", "s\0" .. b } end
    end
    return { "closure", r:byte() % 2 + 1, ups }
  elseif k == 9 then return { "cfunc", r:byte() % #C_FUNCTIONS + 1 }
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
  elseif tag == "cfunc" then return C_FUNCTIONS[d[2]]()
  elseif tag == "closure" then
    local ups = {}
    for i = 1, UPVALUES do ups[i] = d[3][i][1] == "table" and {} or build(d[3][i], reverse, path) end
    return FACTORIES[d[2]](table.unpack(ups, 1, UPVALUES))
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

-- The only refusal possible here is nesting, never a crash or another error.
local function refused(err)
  assert(tostring(err):find("nested deeper", 1, true), "unexpected hash error: " .. tostring(err))
  return nil
end

local function safe_hash(...)
  local ok, h = pcall(cr.hash, ...)
  if ok then return h end
  return refused(h)
end

local function safe_bytes(...)
  local ok, b = pcall(cr.key_bytes, ...)
  if ok then return b end
  return refused(b)
end

-- 3. the bytes decode to exactly the argument list, and only those bytes do.
local function check_decoding(bytes, n, ...)
  local ok, decoded = pcall(kd.decode, bytes)
  assert(ok, "the decoder refused a key: " .. tostring(decoded))
  local expected = kd.describe_args(...)
  assert(kd.same_args(decoded, expected),
    "decoded " .. kd.show_args(decoded) .. ", built " .. kd.show_args(expected) .. " (" .. n .. " arguments)")
  if #bytes > 0 then -- cut short: refused, or (a one-byte last value gone) a shorter list
    local ok2, shorter = pcall(kd.decode, bytes:sub(1, -2))
    assert(not ok2 or #shorter < #decoded, "a key with its last byte cut off decoded to as many arguments")
  end
  assert(not pcall(kd.decode, bytes .. "\xff"), "a key with a stray byte appended still decoded")
  for _, c in ipairs({ 0, 1, 6, 12, 13, 0x80 }) do
    local ok2, longer = pcall(kd.decode, bytes .. string.char(c))
    assert(not ok2 or #longer == #decoded + 1, "an appended byte decoded to the same argument list")
  end
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
        -- a trial: what is matched so far (the enclosing tables a cycle
        -- closes on) stands, what the trial matches is forgotten after it
        local trial = setmetatable({}, { __index = seen })
        if type(k2) == "table" and same(k, k2, trial) and same(v, v2, trial) then found = true; break end
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

-- Copied by the recorder: tables without metatables (cycles and shared
-- subtables included) of anything; what it cannot copy is kept by
-- reference, which `same` compares by identity.
local function plain(v, seen)
  if type(v) ~= "table" then return true end
  seen = seen or {}
  if seen[v] then return true end
  if getmetatable(v) then return false end
  seen[v] = true
  for k, x in pairs(v) do
    if not plain(k, seen) or not plain(x, seen) then return false end
  end
  return true
end

local counter = 0
function fuzz_one(data, debug_print)
  local r = reader(data)
  local n = r:byte() % 3 + 1
  local ds = {}
  for i = 1, n do ds[i] = describe(r, 0) end
  local a, b = {}, {}
  for i = 1, n do a[i], b[i] = build(ds[i], false), build(ds[i], true) end
  -- 1. insertion order does not matter
  local ka, kb = safe_bytes(table.unpack(a, 1, n)), safe_bytes(table.unpack(b, 1, n))
  assert(ka == kb, "equal values gave different keys")
  local ha, hb = safe_hash(table.unpack(a, 1, n)), safe_hash(table.unpack(b, 1, n))
  assert(ha == hb, "equal values gave different digests")
  assert((ka == nil) == (ha == nil), "key_bytes and hash disagree on what they refuse")
  if ka then
    check_decoding(ka, n, table.unpack(a, 1, n))
    -- 2. a changed value gives a different key
    local first = a[1]
    local changed = type(first) == "table" and first or { first }
    local marker = {}
    rawset(changed, marker, true) -- a new pair: a different value
    local kc = safe_bytes(changed, table.unpack(a, 2, n))
    if type(first) == "table" then rawset(changed, marker, nil) end
    if kc then assert(kc ~= ka, "a changed table kept its key") end
    local extended = { table.unpack(a, 1, n) }
    extended[n + 1] = 1
    assert(safe_bytes(table.unpack(extended, 1, n + 1)) ~= ka, "an extra argument kept the key")
  end
  -- 4. the replay recorder round-trips copyable arguments exactly
  local v = a[1]
  if plain(v) and ka then
    counter = counter + 1
    recorded = {}
    replay_probe(counter, v)   -- live: records
    replay_probe(counter, v)   -- hit: the C loop replays the buffer
    replay_probe(counter, v)   -- hit: a compiled function replays it
    assert(#recorded == 3, "expected a live call and two replays")
    if debug_print then debug_print(v, recorded[1][1], recorded[2][1], recorded[3][1]) end
    assert(same(recorded[1][1], recorded[2][1]), "replay did not copy the argument exactly")
    assert(same(recorded[1][1], recorded[3][1]), "compiled replay did not copy the argument exactly")
    cr.clear(replay_probe)
  end
  -- Everything this input allocated is freed before it ends: libFuzzer
  -- treats an input that leaves more allocations than it freed as a
  -- possible leak and runs a full LeakSanitizer scan after it, which made
  -- each run cost a scan of the whole heap.
  collectgarbage()
end
