-- Invariants of the value codec (cache_data entries, recorded UI
-- arguments), checked on every fuzz input (see fuzz/fuzz_host.c) through the
-- codec's internal test hooks:
--  1. the input itself, read as the bytes of an entry (metatables by index
--     and by name) and as one recorded UI argument, is refused with an error
--     or decodes; nothing crashes, decoding allocates no more than a fixed
--     multiple of the input's size, and what decodes encodes and decodes
--     again to the same values;
--  2. values built from the input round-trip exactly, in all three modes:
--     integer and float subtypes, float bits (-0.0, infinities, NaN
--     payloads), strings byte for byte (NULs), nils and the value count,
--     tables reached twice (in one value or in two) as one table in the copy,
--     cycles closing on the copy, table keys, the same metatables; no table
--     of the copy is one of the originals;
--  3. that encoding cut short or extended is refused, and with one byte
--     changed it is refused or decodes: never a crash;
--  4. a table nested deeper than 100 levels is refused with a message
--     saying so, and 100 levels are not;
--  5. a cache_data function returning those values gives exact copies on
--     every hit, decoded by C and (once hot) made by a compiled function.
package.path = "fuzz/?.lua;" .. package.path
local cr = require "cache_resource"
local reader = require("reader").new
local codec = cr.data._internal

local MTS = { { __name = "Point" }, { __index = {} }, { __name = "Vec", __metatable = "locked" } }
for i, mt in ipairs(MTS) do cr.data.register_metatable("fuzz.mt" .. i, mt) end
local STRINGS = { "", "a", "name", "x\0y", string.rep("long", 20) }
local FLOATS = { 0.0, -0.0, 1 / 0, -1 / 0, 0 / 0, -(0 / 0), 1.5, 2 ^ 53, 2 ^ -1074, math.pi }

local function bits(x) return string.pack("<d", x) end

-- ---- values from the input ------------------------------------------------

local gen

-- A new table (its fields from the input). Every table gets a unique _id,
-- so the check can tell which copied table key is which.
local function gen_table(r, ctx, depth)
  local t = {}
  ctx.n = ctx.n + 1
  t._id = ctx.n
  ctx.pool[#ctx.pool + 1] = t -- before its fields: they may refer back to it (a cycle)
  for i = 1, r:byte() % 6 do
    local v = gen(r, ctx, depth + 1)
    if v ~= nil then t[i] = v end -- holes too
  end
  for _ = 1, r:byte() % 5 do
    local k
    if r:byte() % 4 == 0 then
      k = gen_table(r, ctx, depth + 1) -- a table key
    else
      k = gen(r, ctx, depth + 1)
    end
    local v = gen(r, ctx, depth + 1)
    -- not _id: it names the table (a string key from the input may spell it)
    if k ~= nil and k == k and k ~= "_id" and v ~= nil then rawset(t, k, v) end
  end
  if not ctx.plain and r:byte() % 4 == 0 then setmetatable(t, MTS[r:byte() % #MTS + 1]) end
  return t
end

gen = function(r, ctx, depth)
  if r:left() <= 0 then return nil end
  local k = r:byte() % 12
  if k == 0 then return nil
  elseif k == 1 then return r:byte() % 2 == 1
  elseif k == 2 then return (string.unpack("<i8", r:bytes(8))) -- any integer
  elseif k == 3 then return r:byte() - 128
  elseif k == 4 then return (string.unpack("<d", r:bytes(8))) -- any float bits: NaN payloads too
  elseif k == 5 then return FLOATS[r:byte() % #FLOATS + 1]
  elseif k == 6 then return r:bytes(r:byte() % 16) -- NULs and any byte
  elseif k == 7 then return STRINGS[r:byte() % #STRINGS + 1] -- the same string again
  elseif k == 8 and #ctx.pool > 0 then return ctx.pool[r:byte() % #ctx.pool + 1] -- shared, or a cycle
  elseif k >= 9 and depth < 8 then return gen_table(r, ctx, depth)
  end
  return "s" .. r:byte()
end

-- ---- exact equality of a value and its copy ---------------------------------

-- a and b are the same values up to table identity: the map a-table ->
-- b-table is one-to-one (the sharing graph), with the same metatables.
-- `ids`: table keys are matched by their _id (values from the input).
local function iso(a, b, m, inv, ids, path)
  if type(a) ~= type(b) then error(path .. ": a " .. type(a) .. " became a " .. type(b)) end
  if type(a) == "number" then
    if math.type(a) ~= math.type(b) then error(path .. ": a " .. math.type(a) .. " became a " .. math.type(b)) end
    if bits(a) ~= bits(b) then error(path .. ": the number changed") end
    return
  end
  if type(a) ~= "table" then
    if a ~= b then error(path .. ": the " .. type(a) .. " changed") end
    return
  end
  if m[a] ~= nil then
    if not rawequal(m[a], b) then error(path .. ": one table became two") end
    return
  end
  if inv[b] ~= nil then error(path .. ": two tables became one") end
  if rawequal(a, b) then error(path .. ": a table was not copied") end
  m[a], inv[b] = b, a
  if debug.getmetatable(a) ~= debug.getmetatable(b) then error(path .. ": another metatable") end
  local na, nb = 0, 0
  for _ in next, b do nb = nb + 1 end
  for k, v in next, a do
    na = na + 1
    if type(k) == "table" then
      if ids then
        local bk = m[k]
        if bk == nil then
          for k2 in next, b do
            if type(k2) == "table" and rawget(k2, "_id") == rawget(k, "_id") then bk = k2 end
          end
        end
        if bk == nil then error(path .. ": a table key is missing") end
        iso(k, bk, m, inv, ids, path .. "{key}")
        iso(v, rawget(b, bk), m, inv, ids, path .. "[key]")
      end
    else
      iso(v, rawget(b, k), m, inv, ids, path .. "[" .. tostring(k) .. "]")
    end
  end
  if na ~= nb then error(path .. ": " .. na .. " fields became " .. nb) end
end

local function same_lists(a, b, ids)
  if a.n ~= b.n then error(a.n .. " values became " .. b.n) end
  local m, inv = {}, {}
  for i = 1, a.n do iso(a[i], b[i], m, inv, ids, "result[" .. i .. "]") end
end

-- ---- the invariants ----------------------------------------------------------

local function expect_refused(what, ok, err)
  if ok then error(what .. " decoded") end
  if not tostring(err):find("damaged", 1, true) then error(what .. ": an unexpected error: " .. tostring(err)) end
end

-- 1. any bytes
local function decode_any(data)
  for _, mode in ipairs({ "memory", "named", "plain" }) do
    collectgarbage("stop")
    local before = collectgarbage("count")
    local got = table.pack(pcall(codec.decode, mode, data, MTS))
    local grew = (collectgarbage("count") - before) * 1024
    collectgarbage("restart")
    if grew > 96 * #data + 16384 then
      error(string.format("decoding %d bytes (%s) allocated %d bytes", #data, mode, grew))
    end
    if got[1] then
      -- encoded again, it may nest deeper: the encoder meets shared tables
      -- in the order of its own traversal, which need not be the bytes' order
      local values = table.pack(table.unpack(got, 2, got.n))
      local ok, bytes, metas = pcall(codec.encode, mode, table.unpack(values, 1, values.n))
      if ok and bytes then
        same_lists(values, table.pack(codec.decode(mode, bytes, metas)), false)
      elseif mode ~= "plain" and not tostring(bytes):find("nests deeper than 100 levels", 1, true) then
        error("what decoded does not encode again: " .. tostring(bytes))
      end
    else
      expect_refused(mode .. " bytes", false, got[2])
    end
  end
end

-- 2 and 3. values from the input
local function round_trip(r, mode)
  local ctx = { n = 0, pool = {}, plain = mode == "plain" }
  local values = { n = mode == "plain" and 1 or r:byte() % 4 }
  for i = 1, values.n do values[i] = gen(r, ctx, 0) end
  local bytes, metas = codec.encode(mode, table.unpack(values, 1, values.n))
  local copy
  if mode == "plain" then
    copy = table.pack(codec.decode(mode, bytes))
  else
    copy = table.pack(codec.decode(mode, bytes, metas))
  end
  same_lists(values, copy, true)
  -- 3. damaged copies of those bytes
  local cut = r:byte() % #bytes
  if mode ~= "plain" then
    expect_refused("an encoding cut short", pcall(codec.decode, mode, bytes:sub(1, cut), metas))
    expect_refused("an extended encoding", pcall(codec.decode, mode, bytes .. string.char(r:byte()), metas))
  else
    pcall(codec.decode, mode, bytes:sub(1, cut))
  end
  local at = r:byte() % #bytes + 1
  local changed = bytes:sub(1, at - 1) .. string.char((bytes:byte(at) + 1 + r:byte()) % 256) .. bytes:sub(at + 1)
  pcall(codec.decode, mode, changed, metas)
end

-- 4. the nesting limit
local function nesting(levels)
  local root = {}
  local t = root
  for _ = 2, levels do
    t[1] = {}
    t = t[1]
  end
  local ok, err = pcall(codec.encode, "memory", root)
  if levels > 100 then
    if ok or not tostring(err):find("result[1] nests deeper than 100 levels", 1, true) then
      error(levels .. " levels: " .. tostring(err))
    end
  elseif not ok then
    error(levels .. " levels were refused: " .. tostring(err))
  end
end

-- 5. through a cache_data function: a miss, a hit decoded by C, then hits
-- made by the compiled copy (when the values are ones it takes)
cr.set_replay_compile(2)
local current
local serve = cr.data(function() return table.unpack(current, 1, current.n) end, { name = "fuzz copies" })
local function through_cache_data(r)
  local ctx = { n = 0, pool = {} }
  current = { n = r:byte() % 4 }
  for i = 1, current.n do current[i] = gen(r, ctx, 0) end
  if current[1] == nil and current[2] ~= nil then current[1] = false end -- nil, err: a failure, not kept
  local ok, err = pcall(serve)
  if not ok then
    if not tostring(err):find("nests deeper than 100 levels", 1, true) then error(err) end
    return
  end
  for _ = 1, 3 do same_lists(current, table.pack(serve()), true) end
  cr.clear(serve)
end

local modes = { "memory", "named", "plain" }

function fuzz_one(data)
  decode_any(data)
  local r = reader(data)
  round_trip(r, modes[r:byte() % 3 + 1])
  if r:byte() % 8 == 0 then nesting(95 + r:byte() % 11) end
  through_cache_data(r)
  -- Everything this input allocated is freed before it ends (see
  -- fuzz/fuzz_keys.lua): libFuzzer's leak check then stays cheap.
  collectgarbage()
end
