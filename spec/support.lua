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

-- cache_data hits copy two ways: decoded by C, or (once an entry is hot)
-- by a compiled Lua function. Copy specs run under both.
M.COPY_MODES = {
  { name = "copied by the C decoder", compile_after = 0 },
  { name = "copied by compiled functions", compile_after = 1 },
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

-- The error fn(...) raises, as a string (and that it raises at all).
function M.error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  return tostring(err)
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
-- 5.3 none of them). `warn` is the interpreter's (the processes specs start
-- have it or not); busted loads Penlight, which defines a global warn on 5.3.
M.HAS = {
  ["coroutine.close"] = coroutine.close ~= nil,
  ["warn"] = _VERSION ~= "Lua 5.3",
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

-- Lua code of this checkout in a process of its own (the README's examples,
-- a server whose memory and CPU a spec measures): the interpreter running
-- the suite, with this checkout's lua/ and build first on its paths. Under
-- `make asan` that process gets back the sanitizer runtime M.shell keeps
-- from other commands, since it loads the sanitized module.
M.SANITIZED = os.getenv("LD_PRELOAD") ~= nil and os.getenv("LD_PRELOAD"):find("asan", 1, true) ~= nil

-- The shell command that runs the Lua file `path` (a path the command's
-- working directory can reach) that way (see M.checkout_lua).
function M.lua_command(path)
  return (M.checkout_lua()) .. " " .. M.shell_quote(path)
end

-- The body of a chunked HTTP response, its framing checked.
function M.decode_chunked(raw)
  local out, pos = {}, 1
  while true do
    local size, after = raw:match("^(%x+)\r\n()", pos)
    assert(size, "bad chunk framing at byte " .. pos)
    size = tonumber(size, 16)
    if size == 0 then break end
    out[#out + 1] = raw:sub(after, after + size - 1)
    assert(raw:sub(after + size, after + size + 1) == "\r\n", "chunk not closed by CRLF")
    pos = after + size + 2
  end
  return table.concat(out)
end

-- The interpreter running this suite (child processes run on it too).
M.LUA = os.getenv("CR_LUA") or ("lua" .. _VERSION:match("%d+%.%d+"))

-- What a child's script starts with: the in-tree modules, as this suite
-- loads them (build/, or build-asan/ under `make asan`: the child inherits
-- the preloaded sanitizer runtime with the environment).
-- (At `path` when given, kept there: a script whose chunk name, and so the
-- identity of the functions it caches, is the same in every run.)
local function child_script(code, path)
  path = path or os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(("package.cpath = %q .. package.cpath\npackage.path = %q .. package.path\n"):format(
    package.cpath:match("^[^;]*;"), "lua/?.lua;lua/?/init.lua;spec/?.lua;"), code)
  f:close()
  assert(os.execute("chmod 0644 " .. path)) -- readable by a child run as another user
  return path
end

-- Runs the Lua chunk `code` in a child process (its arg[1..] are `args`,
-- `prefix` is shell put before the interpreter: umask, ulimit, env,
-- setpriv...; `path`, the script's path, as child_script takes it). Returns
-- the child's stdout and stderr, and its exit status.
function M.lua_child(code, args, prefix, path)
  local script = child_script(code, path)
  local quoted = {}
  for i, a in ipairs(args or {}) do quoted[i] = M.shell_quote(tostring(a)) end
  local p = assert(io.popen(("%s %s %s %s 2>&1; echo \"exit=$?\""):format(prefix or "", M.LUA, script,
    table.concat(quoted, " "))))
  local out = p:read("a")
  p:close()
  if not path then os.remove(script) end
  local status = tonumber(out:match("exit=(%d+)\n$"))
  return out:gsub("exit=%d+\n$", ""), status
end

-- Runs `n` copies of `code` at once, copy i with arg[1] = i; returns their
-- outputs and exit statuses when all have ended (`path` as for lua_child).
function M.lua_children(code, n, path)
  local script = child_script(code, path)
  local outs, cmd = {}, {}
  for i = 1, n do
    outs[i] = os.tmpname()
    cmd[#cmd + 1] = ("(%s %s %d >%s 2>&1; echo \"exit=$?\" >>%s) &"):format(M.LUA, script, i, outs[i], outs[i])
  end
  assert(os.execute(table.concat(cmd, " ") .. " wait"))
  local results, statuses = {}, {}
  for i = 1, n do
    local out = M.read_file(outs[i])
    os.remove(outs[i])
    statuses[i] = tonumber(out:match("exit=(%d+)\n$"))
    results[i] = out:gsub("exit=%d+\n$", "")
  end
  if not path then os.remove(script) end
  return results, statuses
end

-- Starts `code` in a child process in the background; returns its pid and
-- a function that waits for it to end (after a kill, say) and cleans up.
-- (The shell that started it waits for it, so it is reaped: nothing else
-- may be there to reap an orphan.)
function M.spawn_lua(code, args)
  local script = child_script(code)
  local quoted = {}
  for i, a in ipairs(args or {}) do quoted[i] = M.shell_quote(tostring(a)) end
  local p = assert(io.popen(("%s %s %s >/dev/null 2>&1 & echo $!; wait"):format(M.LUA, script,
    table.concat(quoted, " "))))
  local pid = assert(tonumber(p:read("l")))
  return pid, function()
    p:close()
    os.remove(script)
  end
end

-- Wall-clock seconds (with a fraction) and sleeping, from luasocket.
local socket = require "socket"
M.now = socket.gettime
M.sleep = socket.sleep

-- A new empty directory; removed with everything in it by the function
-- returned second.
function M.temp_dir()
  local dir = os.tmpname() -- not mktemp -d: a child run as another user must reach it (0755)
  os.remove(dir)
  assert(os.execute("mkdir -p " .. M.shell_quote(dir)))
  return dir, function() M.remove_tree(dir) end
end

function M.read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

function M.write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

-- A new empty directory (remove it with M.remove_tree).
function M.tmpdir()
  local dir = (select(2, M.shell("mktemp -d")):gsub("\n$", ""))
  assert(dir:match("^/"), "mktemp -d failed: " .. dir)
  return dir
end

function M.remove_tree(dir)
  assert(dir:match("^/tmp/"), "not a temporary directory: " .. dir)
  M.shell("rm -rf " .. M.shell_quote(dir))
end

-- The command line that runs the interpreter running this suite with this
-- checkout's modules first on its paths, as an installed wrapper would (or,
-- with `only`, on its paths alone: no module of the system is found), and
-- the sanitizer runtime back under `make asan` (the module loaded from
-- CR_BUILD is then instrumented). Also returns the checkout's directory.
local root, build -- this checkout and its build directory, found once
function M.checkout_lua(only)
  if not root then
    root = select(2, M.shell("pwd")):gsub("\n$", "")
    build = os.getenv("CR_BUILD") or "build"
    if build:sub(1, 1) ~= "/" then build = root .. "/" .. build end
  end
  local setup = string.format("package.path = %q .. package.path; package.cpath = %q .. package.cpath",
    root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;", build .. "/?.so;")
  if only then
    setup = string.format("package.path = %q; package.cpath = %q", root .. "/lua/?.lua", build .. "/?.so")
  end
  local preload = os.getenv("LD_PRELOAD")
  return (preload and ("env LD_PRELOAD=" .. M.shell_quote(preload) .. " ") or "")
    .. M.LUA .. " -e " .. M.shell_quote(setup), root
end

local function sleep(seconds)
  require("cqueues").sleep(seconds)
end

-- A process running in the background (see M.spawn).
local Process = {}
Process.__index = Process

-- Whether it has exited; its exit status when it has.
function Process:exited()
  local f = io.open(self.dir .. "/status", "rb")
  if not f then return false end
  local status = tonumber(f:read("a"))
  f:close()
  return status ~= nil, status
end

-- Its output so far (the files appear once it has started).
local function output(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end
function Process:stdout() return output(self.dir .. "/out") end
function Process:stderr() return output(self.dir .. "/err") end

-- The first line it printed on stdout, once it has (nil if it exits or
-- prints nothing within `timeout` seconds, default 10).
function Process:first_line(timeout)
  local deadline = os.time() + (timeout or 10)
  repeat
    local line = self:stdout():match("^([^\n]*)\n")
    if line then return line end
    if self:exited() then return nil end
    sleep(0.05)
  until os.time() > deadline
end

-- Waits for it to exit (up to `timeout` seconds, default 10; then it is
-- killed) and returns its exit status, stdout and stderr; `signal` (e.g.
-- "TERM") is sent first.
function Process:finish(signal, timeout)
  if signal then M.shell("kill -" .. signal .. " " .. self.pid .. " 2>/dev/null") end
  local deadline = os.time() + (timeout or 10)
  local done, status = self:exited()
  while not done and os.time() <= deadline do
    sleep(0.05)
    done, status = self:exited()
  end
  if not done then
    M.shell("kill -KILL " .. self.pid .. " 2>/dev/null")
    while not done do sleep(0.05); done = self:exited() end
    status = "killed after " .. (timeout or 10) .. " s"
  end
  local out, err = self:stdout(), self:stderr()
  M.remove_tree(self.dir)
  return status, out, err
end

-- Starts a simple shell command (`env X=1 prog args`, no pipes: the pid
-- is the program's) in the background, stdout and stderr to files.
function M.spawn(command)
  local dir = M.tmpdir()
  local q = function(name) return M.shell_quote(dir .. "/" .. name) end
  -- the status file appears whole, once the command has exited
  local script = string.format("%s >%s 2>%s </dev/null & pid=$!; echo $pid >%s; wait $pid; "
    .. "echo $? >%s.tmp; mv %s.tmp %s", command, q("out"), q("err"), q("pid"), q("status"), q("status"), q("status"))
  M.shell("sh -c " .. M.shell_quote(script) .. " >/dev/null 2>&1 &")
  local pid
  for _ = 1, 200 do
    local f = io.open(dir .. "/pid", "rb")
    pid = f and tonumber(f:read("a"))
    if f then f:close() end
    if pid then break end
    sleep(0.01)
  end
  return setmetatable({ dir = dir, pid = assert(pid, "the command did not start: " .. command) }, Process)
end

-- Reads Prometheus text exposition: { help = { name = text }, type = { name
-- = kind }, samples = { 'name{label="value",...}' = number }, order = { name
-- of each family, in order } }; raises on a line it cannot read, on a
-- sample before its family's HELP and TYPE or away from its family's other
-- samples, and on a family or a sample given twice.
-- Label values are kept escaped, as written.
function M.parse_metrics(text)
  local m = { help = {}, type = {}, samples = {}, order = {} }
  assert(text == "" or text:sub(-1) == "\n", "the text does not end with a line feed")
  for line in text:gmatch("([^\n]*)\n") do
    local name, rest = line:match("^# HELP ([%a_:][%w_:]*) (.*)$")
    if name then
      assert(m.help[name] == nil, "two HELP lines for " .. name)
      m.help[name] = rest
      m.order[#m.order + 1] = name
    else
      local kind
      name, kind = line:match("^# TYPE ([%a_:][%w_:]*) (%a+)$")
      if name then
        assert(m.help[name] and m.type[name] == nil, "TYPE of " .. name .. " without HELP, or twice")
        m.type[name] = kind
      else
        local series, value = line:match('^([%a_:][%w_:]*%b{}) (%S+)$')
        if not series then series, value = line:match("^([%a_:][%w_:]*) (%S+)$") end
        assert(series, "not an exposition line: " .. line)
        local family = series:match("^[%a_:][%w_:]*")
        assert(m.type[family], "a sample of " .. family .. " before its HELP and TYPE")
        assert(family == m.order[#m.order], "a sample of " .. family .. " among another family's")
        assert(m.samples[series] == nil, "two samples of " .. series)
        local special = { ["+Inf"] = math.huge, ["-Inf"] = -math.huge, NaN = 0 / 0 }
        m.samples[series] = special[value] or assert(tonumber(value), "not a number: " .. value)
      end
    end
  end
  return m
end

-- GET of a URL over loopback with HTTP/1.0 (an unframed body): status, body.
function M.http_get(url)
  local csocket = require "cqueues.socket"
  local host, port, path = url:match("^http://([^/:]+):(%d+)(/.*)$")
  assert(host, "not a URL this can fetch: " .. url)
  local conn = assert(csocket.connect(host, tonumber(port)))
  conn:setmode("b", "b")
  conn:settimeout(10)
  assert(conn:write("GET " .. path .. " HTTP/1.0\r\nHost: " .. host .. "\r\n\r\n"))
  assert(conn:flush())
  local raw = conn:read("*a") or ""
  conn:close()
  local status, body = raw:match("^HTTP/1%.%d (%d+) .-\r\n\r\n(.*)$")
  return tonumber(status), body
end

return M
