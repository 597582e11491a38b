-- Test-only decoder of the canonical key format written by src/cr_key.c
-- (the grammar is in that file's header comment). It reads the bytes that
-- cache_resource.key_bytes(...) returns back into a plain description of
-- the argument list, and refuses anything the encoder would never write:
-- unknown tags, truncated or trailing bytes, non-minimal varints, a nil in
-- an array part or as a last argument, pairs out of canonical order,
-- back-references that do not point at an enclosing table. It is the proof
-- that a key names exactly one argument list: each byte is consumed by
-- exactly one rule, and the result is compared with a description built
-- straight from the Lua values (describe_args). It reads argument keys only:
-- identities and widget keys wrap the same value grammar in tags of their own.
--
-- A description is a tree of nodes:
--   { t = "nil" } | { t = "boolean", v = b } | { t = "int", v = i }
--   { t = "float", bits = <8 bytes, little-endian> } | { t = "string", v = s }
--   { t = "table", name = <__name or nil>, array = { node... }, pairs = { { k = node, v = node }... } }
--   { t = "cycle", depth = d }     -- the enclosing table at depth d (0: the argument)
--   { t = "lfunc", id = hex, upvalues = { { index = i, v = node }... } }
--   { t = "cfunc", id = hex, upvalues = ... } | { t = "cached", id = hex }
--   { t = "replaced", v = node }   -- what a hash_funcs entry returned
local M = {}

local T = {
  NIL = 0, FALSE = 1, TRUE = 2, INT = 3, FLOAT = 4, STRING = 5, TABLE = 6, CYCLE = 7, LFUNC = 8,
  CFUNC = 9, REPLACED = 10, CACHED = 11, ARRAY_END = 12, END = 13,
}
M.TAGS = T
M.MAX_DEPTH = 100
-- every NaN is written as the positive quiet NaN (the sign of 0/0 varies)
local CANONICAL_NAN = "\0\0\0\0\0\0\xf8\x7f"
M.CANONICAL_NAN = CANONICAL_NAN

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local Decoder = {}
Decoder.__index = Decoder

function Decoder:fail(msg)
  error(string.format("keydecode: %s at byte %d", msg, self.i), 0)
end

function Decoder:take(n)
  if n < 0 or self.i + n - 1 > #self.s then self:fail("truncated: " .. n .. " more bytes expected") end
  local b = self.s:sub(self.i, self.i + n - 1)
  self.i = self.i + n
  return b
end

function Decoder:byte()
  return self:take(1):byte()
end

function Decoder:peek()
  if self.i > #self.s then self:fail("truncated: a list is not closed") end
  return self.s:byte(self.i)
end

-- LEB128, minimal (no trailing zero groups), at most 63 bits.
function Decoder:varint()
  local v, shift = 0, 0
  while true do
    local b = self:byte()
    if shift >= 63 then self:fail("varint too long") end
    v = v | ((b & 0x7f) << shift)
    if b & 0x80 == 0 then
      if b == 0 and shift > 0 then self:fail("non-minimal varint") end
      return v
    end
    shift = shift + 7
  end
end

function Decoder:mtname()
  local n = self:varint()
  if n == 0 then return nil end
  return self:take(n - 1)
end

local SCALAR = { [T.NIL] = true, [T.FALSE] = true, [T.TRUE] = true, [T.INT] = true, [T.FLOAT] = true,
  [T.STRING] = true }

function Decoder:upvalues()
  local n, prev, list = self:varint(), 0, {}
  if n > 255 then self:fail("more than 255 upvalues") end
  for k = 1, n do
    local index = self:varint()
    if index <= prev then self:fail("upvalue indices not increasing") end
    if index > 255 then self:fail("upvalue index out of range") end
    prev = index
    if not SCALAR[self:peek()] then self:fail("an upvalue that is not a scalar") end
    list[k] = { index = index, v = self:value(0) }
  end
  return list
end

-- Lua would have stored these keys as array or integer keys: never in the pairs.
local function check_key(d, key, nvalues)
  if key.t == "nil" then d:fail("a nil table key") end
  if key.t == "float" then
    local x = string.unpack("<d", key.bits)
    if x ~= x then d:fail("a NaN table key") end
    if math.tointeger(x) then d:fail("a float table key with an integer value") end
  end
  if key.t == "int" and key.v >= 1 and key.v <= nvalues + 1 then
    d:fail("integer key " .. key.v .. " belongs to the array part")
  end
end

local KEY_IS_UNIQUE = { ["nil"] = true, boolean = true, int = true, float = true, string = true }

-- The encoder's order: key bytes (shorter first on a common prefix), then
-- the pair's bytes.
local function pair_order(ak, ap, bk, bp)
  if ak ~= bk then return ak < bk and -1 or 1 end
  if ap ~= bp then return ap < bp and -1 or 1 end
  return 0
end

function Decoder:table(depth)
  local node = { t = "table", name = self:mtname(), array = {}, pairs = {} }
  self.levels[depth] = "table"
  while self:peek() ~= T.ARRAY_END do
    local v = self:value(depth + 1)
    if v.t == "nil" then self:fail("nil in an array part") end
    node.array[#node.array + 1] = v
  end
  self.i = self.i + 1
  local prev_k, prev_p
  while self:peek() ~= T.END do
    local start = self.i
    local k = self:value(depth + 1)
    local kbytes = self.s:sub(start, self.i - 1)
    local v = self:value(depth + 1)
    local pbytes = self.s:sub(start, self.i - 1)
    check_key(self, k, #node.array)
    if v.t == "nil" then self:fail("a nil table value") end
    if prev_k then
      local c = pair_order(prev_k, prev_p, kbytes, pbytes)
      if c > 0 then self:fail("table pairs out of canonical order") end
      if prev_k == kbytes and KEY_IS_UNIQUE[k.t] then self:fail("a duplicate table key") end
    end
    prev_k, prev_p = kbytes, pbytes
    node.pairs[#node.pairs + 1] = { k = k, v = v }
  end
  self.i = self.i + 1
  self.levels[depth] = nil
  return node
end

function Decoder:value(depth)
  local tag = self:byte()
  if tag == T.NIL then return { t = "nil" }
  elseif tag == T.FALSE then return { t = "boolean", v = false }
  elseif tag == T.TRUE then return { t = "boolean", v = true }
  elseif tag == T.INT then return { t = "int", v = (string.unpack("<i8", self:take(8))) }
  elseif tag == T.FLOAT then
    local bits = self:take(8)
    local x = string.unpack("<d", bits)
    if x ~= x and bits ~= CANONICAL_NAN then self:fail("a NaN that is not the canonical one") end
    return { t = "float", bits = bits }
  elseif tag == T.STRING then return { t = "string", v = self:take(self:varint()) }
  elseif tag == T.TABLE then
    if depth > M.MAX_DEPTH then self:fail("a table nested deeper than " .. M.MAX_DEPTH .. " levels") end
    return self:table(depth)
  elseif tag == T.CYCLE then
    local d = self:varint()
    if d >= depth or self.levels[d] ~= "table" then self:fail("a back-reference to no enclosing table") end
    return { t = "cycle", depth = d }
  elseif tag == T.LFUNC then return { t = "lfunc", id = hex(self:take(16)), upvalues = self:upvalues() }
  elseif tag == T.CFUNC then return { t = "cfunc", id = hex(self:take(8)), upvalues = self:upvalues() }
  elseif tag == T.CACHED then return { t = "cached", id = hex(self:take(16)) }
  elseif tag == T.REPLACED then
    self.levels[depth] = "replaced"
    local v = self:value(depth + 1)
    self.levels[depth] = nil
    return { t = "replaced", v = v }
  end
  self.i = self.i - 1
  self:fail(string.format("unknown tag 0x%02x", tag))
end

-- Decodes key bytes into the list of argument descriptions (and their count).
function M.decode(bytes)
  local d = setmetatable({ s = bytes, i = 1, levels = {} }, Decoder)
  local args = {}
  while d.i <= #bytes do args[#args + 1] = d:value(0) end
  if #args > 0 and args[#args].t == "nil" then d:fail("a trailing nil argument") end
  return args, #args
end

-- ---- descriptions built from Lua values ---------------------------------

local cr -- loaded lazily: the decoder itself needs no module

-- A cached function is a plain function to Lua; the module knows its own.
local function is_cached(v)
  cr = cr or require "cache_resource"
  return type(v) == "function" and (pcall(cr.info, v))
end

-- The 16 (Lua) or 8 (C) identity bytes of a function, read from its own
-- one-argument key; the upvalue part is described independently.
local function function_id(f, skip)
  cr = cr or require "cache_resource"
  return hex(cr.key_bytes(f):sub(2, 1 + skip))
end

local SCALAR_TYPE = { ["nil"] = true, boolean = true, number = true, string = true }

local describe

local function describe_upvalues(f, depth, path)
  local list, i = {}, 1
  while true do
    local name, x = debug.getupvalue(f, i)
    if name == nil then break end
    if SCALAR_TYPE[type(x)] then list[#list + 1] = { index = i, v = describe(x, depth, path) } end
    i = i + 1
  end
  return list
end

function describe(v, depth, path)
  local ty = type(v)
  if ty == "nil" then return { t = "nil" }
  elseif ty == "boolean" then return { t = "boolean", v = v }
  elseif ty == "number" then
    if math.type(v) == "integer" then return { t = "int", v = v } end
    return { t = "float", bits = v ~= v and CANONICAL_NAN or string.pack("<d", v) }
  elseif ty == "string" then return { t = "string", v = v }
  elseif ty == "table" then
    for d = 0, depth - 1 do
      if path[d] == v then return { t = "cycle", depth = d } end
    end
    path[depth] = v
    local mt = getmetatable(v)
    local name = type(mt) == "table" and rawget(mt, "__name") or nil
    local node = { t = "table", name = type(name) == "string" and name or nil, array = {}, pairs = {} }
    local n = 0
    while rawget(v, n + 1) ~= nil do
      n = n + 1
      node.array[n] = describe(rawget(v, n), depth + 1, path)
    end
    for k, x in next, v do
      if not (math.type(k) == "integer" and k >= 1 and k <= n) then
        node.pairs[#node.pairs + 1] = { k = describe(k, depth + 1, path), v = describe(x, depth + 1, path) }
      end
    end
    path[depth] = nil
    return node
  elseif is_cached(v) then
    return { t = "cached", id = function_id(v, 16) }
  elseif ty == "function" then
    if debug.getinfo(v, "S").what == "C" then
      return { t = "cfunc", id = function_id(v, 8), upvalues = describe_upvalues(v, depth, path) }
    end
    return { t = "lfunc", id = function_id(v, 16), upvalues = describe_upvalues(v, depth, path) }
  end
  error("keydecode: no description for a " .. ty)
end

-- The description of an argument list as the key should encode it.
function M.describe_args(...)
  local n = select("#", ...)
  local args = { ... }
  while n > 0 and args[n] == nil do n = n - 1 end
  local out = {}
  for i = 1, n do out[i] = describe(args[i], 0, {}) end
  return out, n
end

-- ---- comparing descriptions ---------------------------------------------

local same

local function same_list(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do
    if not same(a[i], b[i]) then return false end
  end
  return true
end

local function same_upvalues(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do
    if a[i].index ~= b[i].index or not same(a[i].v, b[i].v) then return false end
  end
  return true
end

-- Pairs as a multiset: a decoded table lists them in byte order, a
-- described one in traversal order. Equal descriptions are interchangeable,
-- so a greedy match is exact.
local function same_pairs(a, b)
  if #a ~= #b then return false end
  local used = {}
  for _, p in ipairs(a) do
    local found = false
    for j, q in ipairs(b) do
      if not used[j] and same(p.k, q.k) and same(p.v, q.v) then
        used[j], found = true, true
        break
      end
    end
    if not found then return false end
  end
  return true
end

function same(a, b)
  if a.t ~= b.t then return false end
  local t = a.t
  if t == "nil" then return true
  elseif t == "boolean" or t == "int" or t == "string" then return a.v == b.v
  elseif t == "float" then return a.bits == b.bits
  elseif t == "cycle" then return a.depth == b.depth
  elseif t == "cached" then return a.id == b.id
  elseif t == "lfunc" or t == "cfunc" then return a.id == b.id and same_upvalues(a.upvalues, b.upvalues)
  elseif t == "replaced" then return same(a.v, b.v)
  elseif t == "table" then
    return a.name == b.name and same_list(a.array, b.array) and same_pairs(a.pairs, b.pairs)
  end
  return false
end

M.same = same
M.same_args = same_list

-- A readable one-line rendering, for failure messages.
local function show(node)
  local t = node.t
  if t == "nil" then return "nil"
  elseif t == "boolean" or t == "int" then return tostring(node.v)
  elseif t == "float" then
    local x = string.unpack("<d", node.bits)
    return x ~= x and "nan" or string.format("%.17g", x)
  elseif t == "string" then return string.format("%q", node.v)
  elseif t == "cycle" then return "<cycle to depth " .. node.depth .. ">"
  elseif t == "cached" then return "<cached " .. node.id .. ">"
  elseif t == "replaced" then return "<replaced " .. show(node.v) .. ">"
  elseif t == "lfunc" or t == "cfunc" then
    local ups = {}
    for _, u in ipairs(node.upvalues) do ups[#ups + 1] = u.index .. "=" .. show(u.v) end
    return "<" .. t .. " " .. node.id:sub(1, 8) .. " {" .. table.concat(ups, ", ") .. "}>"
  end
  local parts = {}
  for _, v in ipairs(node.array) do parts[#parts + 1] = show(v) end
  for _, p in ipairs(node.pairs) do parts[#parts + 1] = "[" .. show(p.k) .. "]=" .. show(p.v) end
  return (node.name and ("<" .. string.format("%q", node.name) .. ">") or "") .. "{" .. table.concat(parts, ", ") .. "}"
end

function M.show_args(args)
  local parts = {}
  for i, a in ipairs(args) do parts[i] = show(a) end
  return "(" .. table.concat(parts, ", ") .. ")"
end
M.show = show

return M
