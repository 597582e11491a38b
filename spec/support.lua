-- Small helpers shared by the specs.
local cr = require "cache_resource"
local M = {}

-- The stats() row of the newest cache with this display name.
function M.stat(name)
  local found
  for _, s in ipairs(cr.stats()) do
    if s.name == name then found = s end
  end
  return found
end

-- Replays run two ways: decoded record by record by the C loop, or (once a
-- buffer is hot) by a compiled Lua function. Replay specs run under both.
M.REPLAY_MODES = {
  { name = "replayed by the C loop", compile_after = 0 },
  { name = "replayed by compiled functions", compile_after = 1 },
}

-- Puts the module back the way a spec expects to find it.
function M.reset()
  cr.set_replay_compile(8)
  cr.set_clock(nil)
  cr.set_waiter(nil)
  cr.set_scheduler(nil)
  cr.set_session(nil)
  cr.clear()
  cr.data.clear()
end

-- A controllable clock for TTL specs.
function M.fake_clock(start)
  local clock = { now = start or 1000 }
  cr.set_clock(function() return clock.now end)
  return clock
end

-- Captures what warn() receives while fn runs.
function M.capture_warnings(fn)
  local seen, saved = {}, warn
  warn = function(...) seen[#seen + 1] = table.concat({ ... }) end
  local ok, err = pcall(fn)
  warn = saved
  assert(ok, err)
  return seen
end

-- What this Lua has of the features some specs need (Lua 5.4 has them all,
-- 5.3 none of them).
M.HAS = {
  ["coroutine.close"] = coroutine.close ~= nil,
  ["warn"] = warn ~= nil,
  ["<close>"] = load("local x <close> = nil") ~= nil,
}

-- it(name, fn) when this Lua has `feature` (a key of M.HAS); otherwise the
-- test is registered as pending, with the reason in its name. (Tail calls,
-- so busted reports the spec's own file and line.)
function M.it_needs(feature, name, fn)
  local busted = require "busted"
  assert(M.HAS[feature] ~= nil, "unknown feature " .. tostring(feature))
  if M.HAS[feature] then return busted.it(name, fn) end
  return busted.pending(name .. " [skipped: needs " .. feature .. ", which " .. _VERSION .. " lacks]")
end

-- Registry slots holding something other than a number (luaL_unref leaves
-- integer free-list links behind): leak checks compare it to a baseline.
function M.registry_objects()
  local n = 0
  for _, v in pairs(debug.getregistry()) do
    if type(v) ~= "number" then n = n + 1 end
  end
  return n
end

-- The collector's pace: Lua 5.4 sets it in one call, 5.3 in two (and has
-- no step size; 5.4 leaves a setting given as 0 as it was).
-- gc_pace(1, 100, 1) runs a step at almost every allocation.
function M.gc_pace(pause, stepmul, stepsize)
  if _VERSION == "Lua 5.3" then
    collectgarbage("setpause", pause)
    collectgarbage("setstepmul", stepmul)
  else
    collectgarbage("incremental", pause, stepmul, stepsize)
  end
end

-- A string quoted for sh.
function M.shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Runs a shell command and returns ok, its output, how and code (as
-- io.popen's close gives them). Under `make asan` the sanitizer runtime is
-- preloaded into this process: shell tools must not inherit it (they would
-- abort at exit on its leak check), so it is dropped for the command.
function M.shell(command)
  local p = assert(io.popen("exec env -u LD_PRELOAD sh -c " .. M.shell_quote(command)))
  local out = p:read("a")
  local ok, how, code = p:close()
  return ok, out, how, code
end

function M.read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

return M
