-- What clients cannot do to the web server: make it hold memory by not
-- reading, or make it spin when it runs out of file descriptors. The server
-- runs in a process of its own, whose memory and CPU time are read from
-- /proc; the clients are plain blocking sockets (lua-socket) in this one.
local socket = require "socket"
local support = require "support"

local shell_quote = support.shell_quote

-- The server process: serves `script` (Lua source, a file the server loads
-- on every run) with the options `opts` (Lua source of a table's fields),
-- under the shell commands `limits` (e.g. "ulimit -n 64"). Returns
-- { pid, port, log (its log file), dir }.
local function start_server(script, opts, limits)
  local dir = select(2, support.shell("mktemp -d")):gsub("\n$", "")
  assert(dir:match("^/tmp/"), dir)
  local function write(name, text)
    local f = assert(io.open(dir .. "/" .. name, "wb"))
    f:write(text)
    f:close()
  end
  write("app.lua", script)
  write("serve.lua", string.format([[
local cqueues = require "cqueues"
local server = require "cache_resource.server"
local cq = cqueues.new()
local srv = server.new({ script = %q, port = 0, %s,
  log = function(line) io.stderr:write(line, "\n") io.stderr:flush() end }):start(cq)
io.stdout:write(srv.bound_port, "\n")
io.stdout:flush()
assert(cq:loop())
]], dir .. "/app.lua", opts))
  local ok, out = support.shell(string.format("cd %s && (%s; exec %s >port 2>log </dev/null) & echo $!",
    shell_quote(dir), limits or ":", support.lua_command("serve.lua")))
  assert(ok, out)
  local srv = { pid = tonumber(out:match("%d+")), dir = dir, log = dir .. "/log" }
  for _ = 1, 100 do
    local f = io.open(dir .. "/port")
    local port = f and tonumber(f:read("a"):match("%d+"))
    if f then f:close() end
    if port then srv.port = port; return srv end
    socket.sleep(0.05)
  end
  error("the server did not start:\n" .. (select(2, support.shell("cat " .. shell_quote(srv.log)))))
end

local function stop_server(srv)
  support.shell("kill " .. srv.pid .. "; rm -rf " .. shell_quote(srv.dir))
end

-- A field of /proc/PID/status, in kB (VmRSS, VmHWM).
local function status_kb(pid, field)
  return tonumber(support.read_file("/proc/" .. pid .. "/status"):match(field .. ":%s*(%d+)"))
end

-- User + system CPU seconds the process has used.
local function cpu_seconds(pid)
  local stat = support.read_file("/proc/" .. pid .. "/stat")
  local after_name = stat:match("%) (.*)$") -- the name may hold spaces; fields from 3 on follow it
  local fields = {}
  for f in after_name:gmatch("%S+") do fields[#fields + 1] = f end
  local tick = tonumber((select(2, support.shell("getconf CLK_TCK")))) or 100
  return (tonumber(fields[12]) + tonumber(fields[13])) / tick -- utime and stime: fields 14 and 15
end

local function log_lines(srv)
  local n = 0
  for _ in io.lines(srv.log) do n = n + 1 end
  return n
end

local function count_in_log(srv, text)
  local n = 0
  for line in io.lines(srv.log) do
    if line:find(text, 1, true) then n = n + 1 end
  end
  return n
end

local function wait_until(seconds, ready)
  local deadline = socket.gettime() + seconds
  while socket.gettime() < deadline do
    if ready() then return true end
    socket.sleep(0.05)
  end
  return ready()
end

-- Sends a GET and, unless `silent`, reads the whole response; returns the
-- connection (silent) or status and the body, chunks decoded.
local function get(port, path, silent)
  local conn = assert(socket.connect("127.0.0.1", port))
  conn:settimeout(30)
  assert(conn:send("GET " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n"))
  if silent then return conn end
  local raw = conn:receive("*a") or ""
  conn:close()
  local head, body = raw:match("^(.-\r\n)\r\n(.*)$")
  assert(head, "no response")
  if head:lower():find("transfer%-encoding: chunked") then body = support.decode_chunked(body) end
  return tonumber(head:match("^HTTP/1%.%d (%d+)")), body
end

-- A page of about 200 KB, then 100 cache misses: every miss streams the
-- page twice (with its spinner, then without), about 40 MB in all.
local BIG_PAGE = [[
local cr = require "cache_resource"
local ui = require "cache_resource.ui"
local line = string.rep("0123456789", 100)
for i = 1, 200 do ui.text(i .. " " .. line) end
local miss = cr(function(k) return k end, { name = "a miss every time" })
for i = 1, 100 do
  _G.KEY = (_G.KEY or 0) + 1
  miss(_G.KEY)
  ui.caption("after miss " .. i)
end
ui.text("the end")
]]

describe("the web server, against clients that do not play along", function()
  local function it_unsanitized(name, fn)
    if support.SANITIZED then
      return pending(name .. " [skipped: under the sanitizer, RSS measures its shadow memory and quarantine]")
    end
    return it(name, fn)
  end

  it_unsanitized("holds little memory for 5 clients that never read a page streaming 40 MB, "
    .. "closes them past the timeout, and a reading client gets the whole page", function()
    local srv = start_server(BIG_PAGE, "timeout = 1")
    local ok, err = pcall(function()
      assert.equal(200, (get(srv.port, "/healthz")))
      local before = status_kb(srv.pid, "VmRSS") -- the server as it starts
      local silent = {}
      for i = 1, 5 do silent[i] = get(srv.port, "/", true) end
      local status, body = get(srv.port, "/")
      assert.equal(200, status)
      -- the reading client: the final page whole, after the last snapshot it was sent
      local final = body:match('<form class="cr%-stage cr%-final".-</form><i class="cr%-done"></i>')
      assert.truthy(final, "no whole final page")
      assert.truthy(final:find("after miss 100", 1, true))
      assert.truthy(final:find("the end", 1, true))
      assert.is_nil(final:find("cr-spinner", 1, true))
      assert.truthy(body:find("</body></html>\n$"))
      local grown = status_kb(srv.pid, "VmHWM") - before
      assert.is_true(grown < 24 * 1024, "the server grew by " .. grown .. " kB")
      -- every connection is answered and closed: the silent ones once the timeout passed
      assert.is_true(wait_until(10, function() return count_in_log(srv, "GET / -> 200") == 6 end),
        count_in_log(srv, "GET / -> 200") .. " of 6 requests ended")
      for _, conn in ipairs(silent) do conn:close() end
    end)
    stop_server(srv)
    assert(ok, err)
  end)

  it("backs off when out of file descriptors, logging once, and answers again once they are free", function()
    local srv = start_server('require("cache_resource.ui").text("hello")', "timeout = 30", "ulimit -n 64")
    local ok, err = pcall(function()
      assert.equal(200, (get(srv.port, "/healthz")))
      local idle = {}
      for i = 1, 100 do idle[i] = assert(socket.connect("127.0.0.1", srv.port)) end
      assert.is_true(wait_until(5, function() return count_in_log(srv, "accept failed") > 0 end),
        "the server never ran out of descriptors")
      local cpu0 = cpu_seconds(srv.pid)
      socket.sleep(2)
      local cpu = cpu_seconds(srv.pid) - cpu0
      assert.is_true(cpu < 0.5, string.format("%.2f s of CPU in 2 s", cpu))
      assert.is_true(log_lines(srv) < 1000, log_lines(srv) .. " log lines")
      assert.equal(1, count_in_log(srv, "accept failed"))
      for _, conn in ipairs(idle) do conn:close() end
      local answered = wait_until(5, function()
        local ok_get, status = pcall(get, srv.port, "/healthz")
        return ok_get and status == 200
      end)
      assert.is_true(answered, "no answer once the idle connections closed")
      assert.equal(1, count_in_log(srv, "accepting connections again"))
    end)
    stop_server(srv)
    assert(ok, err)
  end)
end)
