-- cache_resource.ui.format: the text of values, for the UI modules and the
-- server. Error messages that point at the user's code, any value as text
-- (never raising), JSON with sorted keys, numbers as a page shows them, HTML
-- escaping, and a try/finally for Lua 5.3. Internal: `cache_resource.ui` is
-- the public module.
local json = require "dkjson"

local M = {}

-- ------------------------------------------------------------ messages

-- The source names (debug.getinfo's `source`) of the files of
-- cache_resource.ui: error locations skip their frames.
local internal = {}

-- Counts the calling file as part of cache_resource.ui (each of its files
-- calls this once, when loaded).
function M.internal_file()
  internal[debug.getinfo(2, "S").source] = true
end
M.internal_file()

-- "file:line: " of the user code that called into cache_resource.ui, for
-- errors raised below C frames (replayables) where error()'s level cannot
-- tell.
function M.where()
  for level = 3, 40 do
    local info = debug.getinfo(level, "Sl")
    if not info then break end
    if not internal[info.source] and info.currentline and info.currentline > 0 then
      return info.short_src .. ":" .. info.currentline .. ": "
    end
  end
  return ""
end

-- Raises "file:line: cache_resource.ui.WHAT: MESSAGE", at the user's line.
function M.fail(what, message)
  error(M.where() .. "cache_resource.ui." .. what .. ": " .. message, 0)
end

-- tostring that never raises: an object whose __tostring fails still gets a text.
local function safe_text(v)
  if type(v) == "string" then return v end
  local ok, s = pcall(tostring, v)
  if ok and type(s) == "string" then return s end
  return string.format("(a %s whose __tostring failed: %s)", type(v), ok and "it returned no string" or safe_text(s))
end
M.safe_text = safe_text

-- A value as an error message shows it: a string quoted, a table (or any
-- reference) by its type.
function M.show(v)
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) == "table" or type(v) == "function" or type(v) == "userdata" or type(v) == "thread" then
    return "a " .. type(v)
  end
  return safe_text(v)
end

-- ---------------------------------------------------------------- JSON

local function key_before(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "number" or ta == "string" then return a < b end
  return safe_text(a) < safe_text(b)
end

-- A copy of v that dkjson writes deterministically: every object carries its
-- keys, sorted, as __jsonorder; keys become strings (so a table with a
-- numeric `n` is not taken for an array); values JSON cannot hold become
-- their text; a cycle becomes "<cycle>".
local function jsonable(v, seen)
  local t = type(v)
  if t == "nil" or t == "boolean" or t == "number" or t == "string" then return v end
  if t ~= "table" then return safe_text(v) end
  local mt = getmetatable(v)
  if mt ~= nil and (type(mt) ~= "table" or mt.__tostring) then return safe_text(v) end
  if seen[v] then return "<cycle>" end
  seen[v] = true
  local keys, n = {}, 0
  for k in pairs(v) do n = n + 1; keys[n] = k end
  local copy
  if n == 1 and keys[1] == "n" and type(v.n) == "number" then
    -- dkjson reads a lone numeric "n" as an array length
    local text = json.encode(v.n)
    copy = setmetatable({}, { __tojson = function() return '{"n":' .. text .. "}" end })
  elseif n > 0 and #v == n then
    copy = {}
    for i = 1, n do copy[i] = jsonable(v[i], seen) end
  else
    table.sort(keys, key_before)
    local order = {}
    copy = {}
    for i, k in ipairs(keys) do
      local name = type(k) == "string" and k or safe_text(k)
      order[i] = name
      copy[name] = jsonable(v[k], seen)
    end
    setmetatable(copy, { __jsonorder = order, __jsontype = "object" })
  end
  seen[v] = nil
  return copy
end

-- JSON with sorted keys (lua-dkjson), so the same table always gives the
-- same text. Public as ui.to_json (documented there).
function M.to_json(v, pretty)
  return json.encode(jsonable(v, {}), { indent = pretty and true or nil })
end

-- What an element shows for a value: a string as it is, a plain table as
-- JSON, anything else as its text.
function M.to_text(v)
  if type(v) == "string" then return v end
  if type(v) == "table" and getmetatable(v) == nil then return M.to_json(v) end
  return safe_text(v)
end

-- A number as a widget shows it: a float always with a decimal point or an
-- exponent, so 1.0 does not read as the integer 1.
function M.fmt_number(v)
  if math.type(v) == "float" then
    local s = string.format("%.14g", v)
    if not s:find("[%.eEn]") then s = s .. ".0" end
    return s
  end
  return tostring(v)
end

-- ---------------------------------------------------------------- HTML

local ENTITY = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }

-- Text made safe inside HTML elements and quoted attribute values.
function M.esc(s)
  return (tostring(s):gsub("[&<>\"']", ENTITY))
end

-- ----------------------------------------------------------------- misc

-- Whether v can be called: a function, or a value whose metatable has __call.
function M.is_callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__call ~= nil
end

-- Runs fn(...), then cleanup() whatever happens; an error goes on
-- unchanged. (Not a `<close>` variable: the module also runs on Lua 5.3.)
function M.finally(cleanup, fn, ...)
  local res = table.pack(pcall(fn, ...))
  cleanup()
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

return M
