-- Test entries that carry their own key and a checksum, so that a reader
-- can tell an exact entry from a torn, mixed or misplaced one:
--
--   entry  = "ENTRY " key " " writer " " seq " " len "\n" body{len} sum
--   body   = the header and four bytes 00 01 02 ff, repeated, cut to len
--   sum    = 32 hex digits: cache_resource.hash of everything before it
--            (XXH3, unseeded: the same in every process)
--
-- Loaded by specs and by the child processes they start.
local hash = require("cache_resource").hash
local M = {}

-- The entry `writer` writes as its `seq`-th value of `key`, `len` body bytes.
function M.make(key, writer, seq, len)
  local header = ("ENTRY %s %s %d %d\n"):format(key, writer, seq, len)
  local unit = header .. "\0\1\2\255"
  local body = unit:rep(len // #unit + 1):sub(1, len)
  local s = header .. body
  return s .. hash(s)
end

-- true, writer, seq when `bytes` is a whole entry of `key`; else false and why.
function M.check(key, bytes)
  if type(bytes) ~= "string" then return false, "not a string: " .. type(bytes) end
  local k, writer, seq, len, at = bytes:match("^ENTRY (%S+) (%S+) (%d+) (%d+)\n()")
  if not k then return false, "no header" end
  if k ~= key then return false, "the entry of " .. k .. " read as " .. key end
  if #bytes ~= at - 1 + tonumber(len) + 32 then return false, "length " .. #bytes .. " for a body of " .. len end
  if bytes:sub(-32) ~= hash(bytes:sub(1, -33)) then return false, "checksum" end
  if bytes ~= M.make(key, writer, tonumber(seq), tonumber(len)) then return false, "body" end
  return true, writer, tonumber(seq)
end

return M
