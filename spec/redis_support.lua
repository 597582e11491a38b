-- Redis servers for the specs and the bench: the one `.ci/run` started
-- (its port in CR_REDIS_PORT), or private ones started here, each on a free
-- loopback port, without persistence, in a temporary directory. Specs that
-- kill, restart or stall a server start their own.
local support = require "support"
local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local resp = require "cache_resource.redis_resp"

local M = {}

M.available = support.shell("command -v redis-server >/dev/null && command -v redis-cli >/dev/null")
M.MISSING = "redis-server is not installed (Debian: apt-get install redis-server)"

-- How much slower than a plain run this process is: the few specs that
-- time what they check (a failure is fast, a timer is on time) allow that
-- much more under valgrind (memcheck's preload) and ASan.
local preload = os.getenv("LD_PRELOAD") or ""
M.SLOWDOWN = preload:find("vgpreload", 1, true) and 20 or preload:find("asan", 1, true) and 2 or 1

-- A fresh key prefix for each store a spec makes, so that no two stores
-- (of this run, or of another run on the same server) see each other's keys.
local made = 0
function M.fresh_prefix(base)
  made = made + 1
  return ("%s:%d:%d:%d:"):format(base or "cr-spec", os.time(), math.random(1 << 30), made)
end

-- A TCP port nobody listens on now (the kernel's pick for port 0).
function M.free_port()
  local l = socket.listen { host = "127.0.0.1", port = 0 }
  assert(l:listen())
  local _, _, port = l:localname()
  l:close()
  return port
end

-- One command on a fresh connection (blocking; for setting up and
-- inspecting a server): its reply as cache_resource.redis_resp gives it, or
-- nil, why.
local function command(port, password, ...)
  local sock = socket.connect { host = "127.0.0.1", port = port }
  sock:onerror(function(_, _, why) return why end)
  if not sock:connect(2) then return nil, "cannot connect" end
  local codec = resp.codec(1 << 24)
  local commands = { ... }
  if password then table.insert(commands, 1, { "AUTH", password }) end
  for _, cmd in ipairs(commands) do sock:xwrite(codec:command(table.unpack(cmd)), "bn", 2) end
  local reply
  for _ = 1, #commands do
    reply = codec:reply()
    while reply == nil do
      local data = sock:xread(-65536, "b", 2)
      if not data then sock:close(); return nil, "no reply" end
      codec:feed(data)
      reply = codec:reply()
    end
  end
  sock:close()
  return reply
end

local Server = {}
Server.__index = Server

local function wait_until(deadline, done)
  while not done() do
    if cqueues.monotime() > deadline then return false end
    cqueues.sleep(0.02)
  end
  return true
end

-- Starts redis-server on self.port; raises when it does not answer soon.
function Server:start()
  local args = {
    "redis-server", "--port", tostring(self.port), "--bind", "127.0.0.1", "--save", "''",
    "--appendonly", "no", "--dir", self.dir, "--logfile", self.dir .. "/redis.log",
    "--enable-debug-command", "local",
  }
  if self.password then args[#args + 1] = "--requirepass " .. support.shell_quote(self.password) end
  local ok, out = support.shell(table.concat(args, " ") .. " >/dev/null 2>&1 & echo $!")
  assert(ok, out)
  self.pid = assert(tonumber(out:match("%d+")), out)
  local up = wait_until(cqueues.monotime() + 10, function() return command(self.port, nil, { "PING" }) ~= nil end)
  assert(up, "redis-server did not start on port " .. self.port .. ": "
    .. (io.open(self.dir .. "/redis.log") and support.read_file(self.dir .. "/redis.log") or ""))
  return self
end

-- One command (AUTH first when the server has a password).
function Server:command(...)
  return command(self.port, self.password, { ... })
end

-- Sends one command and returns without waiting for its reply (the
-- returned socket keeps the connection until it is closed): for DEBUG
-- SLEEP, which stalls the server.
function Server:send(...)
  local sock = socket.connect { host = "127.0.0.1", port = self.port }
  sock:onerror(function(_, _, why) return why end)
  assert(sock:connect(2))
  local codec = resp.codec(1 << 16)
  if self.password then assert(sock:xwrite(codec:command("AUTH", self.password), "bn", 2)) end
  assert(sock:xwrite(codec:command(...), "bn", 2))
  return sock
end

-- The process has exited (a zombie waiting for a parent that may never
-- reap it counts as gone).
local function gone(pid)
  local status = io.open("/proc/" .. pid .. "/status")
  if status == nil then return true end
  local text = status:read("a")
  status:close()
  return text:find("\nState:%s*Z") ~= nil
end

-- Kills the server at once (SIGKILL: no shutdown, connections reset).
function Server:kill()
  support.shell("kill -KILL " .. self.pid)
  assert(wait_until(cqueues.monotime() + 10, function() return gone(self.pid) end), "redis-server survived SIGKILL")
end

-- Stops the server and removes its directory.
function Server:stop()
  if self.pid and not gone(self.pid) then
    support.shell("kill -TERM " .. self.pid)
    if not wait_until(cqueues.monotime() + 10, function() return gone(self.pid) end) then self:kill() end
  end
  if self.dir:match("^/tmp/") then support.shell("rm -rf " .. support.shell_quote(self.dir)) end
end

-- A private server. opts: password.
function M.start(opts)
  opts = opts or {}
  local ok, dir = support.shell("mktemp -d /tmp/cr-redis.XXXXXX")
  assert(ok, dir)
  local server = setmetatable({ port = M.free_port(), password = opts.password, dir = dir:gsub("\n$", "") }, Server)
  return server:start()
end

-- The server this run shares: CI's (CR_REDIS_PORT), else a private one.
-- Returns it and whether the caller must stop it.
function M.shared()
  local port = tonumber(os.getenv("CR_REDIS_PORT") or "")
  if port then return setmetatable({ port = port }, Server), false end
  return M.start(), true
end

return M
