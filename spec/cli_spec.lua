-- The cache-resource command: its command line and exit statuses, read in
-- this process (cache_resource.cli), and bin/cache-resource run from this
-- checkout in a process of its own, serving apps over loopback; warnings
-- on stderr under the command and under serve().
local cli = require "cache_resource.cli"
local socket = require "cqueues.socket"
local support = require "support"

local function has(text, fragment) return text:find(fragment, 1, true) ~= nil end

-- main(argv) with its output captured: status, stdout, stderr.
local function main(argv)
  local out, err = {}, {}
  local function sink(t) return { write = function(_, ...) for _, s in ipairs({ ... }) do t[#t + 1] = s end end } end
  local status = cli.main(argv, { out = sink(out), err = sink(err) })
  return status, table.concat(out), table.concat(err)
end

local APP = [[
local cr = require "cache_resource"
local ui = require "cache_resource.ui"
local greeting = require "cli_greeting"   -- a module next to the app
ui.title(greeting.text)
ui.write("answer " .. cr(function() return 42 end, { name = "cli-answer" })())
]]

-- An app whose on_release raises on every run and whose background refresh
-- fails (from the second run on): each makes a warning.
local FLAKY = [[
local cr = require "cache_resource"
local ui = require "cache_resource.ui"
_G.RUNS = (_G.RUNS or 0) + 1
local held = cr(function() return {} end, { name = "cli-flaky-release",
  on_release = function() error("release boom", 0) end })
held()
cr.clear(held)
local value = cr(function()
  if _G.RUNS > 1 then error("refresh boom", 0) end
  return 1
end, { name = "cli-flaky-refresh", ttl = 0.2, max_stale = 60, refresh_mode = "background" })
ui.write("value " .. value())
]]

-- A directory with the apps in it.
local function app_dir()
  local dir = support.tmpdir()
  support.write_file(dir .. "/app.lua", APP)
  support.write_file(dir .. "/cli_greeting.lua", 'return { text = "Hello from the app directory" }\n')
  support.write_file(dir .. "/flaky.lua", FLAKY)
  support.write_file(dir .. "/broken.lua", "local x = = 1\n")
  return dir
end

local function lines_with(text, fragment)
  local n = 0
  for line in text:gmatch("[^\n]+") do
    if has(line, fragment) then n = n + 1 end
  end
  return n
end

-- Loads the flaky app twice, the second time once its entry is stale, and
-- waits for the failed background refresh. Returns the process's status,
-- stdout and stderr after SIGTERM.
local function run_flaky(process, expect_warnings)
  local url = assert(process:first_line(), "no URL on stdout: " .. process:stderr())
  assert.equal(200, (support.http_get(url)))
  require("cqueues").sleep(0.3)
  local status, body = support.http_get(url)
  assert.equal(200, status)
  assert.truthy(has(body, "value 1"), "the stale value is served")
  -- the failed refresh has run once the metrics count it
  local deadline = os.time() + 10
  repeat
    local _, text = support.http_get(url .. "metrics")
    local done = text:find('cache_resource_refresh_failures_total{function="cli-flaky-refresh",kind="resource"} 1',
      1, true)
    if not done then require("cqueues").sleep(0.05) end
  until done or os.time() > deadline
  if expect_warnings then
    deadline = os.time() + 10
    while not has(process:stderr(), "background refresh of cli-flaky-refresh") and os.time() <= deadline do
      require("cqueues").sleep(0.05)
    end
  end
  return process:finish("TERM")
end

describe("the cache-resource command", function()
  describe("read in this process", function()
    it("prints its usage for --help (also after run) and exits 0", function()
      for _, argv in ipairs({ { "--help" }, { "-h" }, { "run", "app.lua", "--help" } }) do
        local status, out, err = main(argv)
        assert.equal(0, status)
        assert.equal("", err)
        assert.equal(cli.USAGE, out)
      end
      for _, option in ipairs({ "--host", "--port", "--idle", "--max-sessions", "--version", "Exit status" }) do
        assert.truthy(has(cli.USAGE, option), option)
      end
    end)

    it("prints the module's version for --version", function()
      local status, out = main({ "--version" })
      assert.equal(0, status)
      assert.equal("cache-resource " .. require("cache_resource")._VERSION .. " (" .. _VERSION .. ")\n", out)
    end)

    it("reads the options of run, given as two arguments or as --name=value", function()
      assert.same({ action = "run", app = "app.lua", options = {} }, cli.parse({ "run", "app.lua" }))
      assert.same({ action = "run", app = "a/app.lua",
        options = { host = "0.0.0.0", port = 0, idle = 1.5, max_sessions = 3 } },
        cli.parse({ "run", "--host", "0.0.0.0", "a/app.lua", "--port=0", "--idle", "1.5", "--max-sessions=3" }))
      assert.same({ action = "run", app = "app.lua", options = { port = 9000 } },
        cli.parse({ "run", "app.lua", "--port", "8000", "--port", "9000" }))
    end)

    it("refuses a wrong command line with exit status 2 and a message saying what is wrong", function()
      local cases = {
        { {}, "no command: cache-resource run APP.lua" },
        { { "serve", "app.lua" }, "unknown command 'serve'" },
        { { "run" }, "which app? cache-resource run APP.lua" },
        { { "run", "a.lua", "b.lua" }, "one app at a time: 'b.lua' after 'a.lua'" },
        { { "run", "a.lua", "--prot", "1" }, "unknown option '--prot' (see cache-resource --help)" },
        { { "run", "a.lua", "--port" }, "--port needs a value" },
        { { "run", "a.lua", "--port", "65536" }, "--port takes a port number from 0 to 65535, got '65536'" },
        { { "run", "a.lua", "--port", "80.5" }, "--port takes a port number from 0 to 65535, got '80.5'" },
        { { "run", "a.lua", "--port=http" }, "--port takes a port number from 0 to 65535, got 'http'" },
        { { "run", "a.lua", "--idle", "0" }, "--idle takes a number of seconds > 0, got '0'" },
        { { "run", "a.lua", "--idle", "1e999" }, "--idle takes a number of seconds > 0, got '1e999'" },
        { { "run", "a.lua", "--max-sessions", "0" }, "--max-sessions takes an integer >= 1, got '0'" },
        { { "run", "a.lua", "--host=" }, "--host takes an address, got ''" },
      }
      for _, case in ipairs(cases) do
        local status, out, err = main(case[1])
        local shown = table.concat(case[1], " ")
        assert.equal(2, status, shown)
        assert.equal("", out, shown)
        assert.truthy(has(err, "cache-resource: " .. case[2]), shown .. ": " .. err)
        assert.equal(1, select(2, err:gsub("\n", "")), shown .. " takes one line")
      end
    end)

    it("refuses an app file that is missing or does not compile, with exit status 2, before serving", function()
      local dir = app_dir()
      local status, out, err = main({ "run", dir .. "/missing.lua", "--port", "0" })
      assert.equal(2, status)
      assert.equal("", out)
      assert.equal("cache-resource: the app does not load: cannot open " .. dir
        .. "/missing.lua: No such file or directory\n", err)
      status, out, err = main({ "run", dir .. "/broken.lua", "--port", "0" })
      assert.equal(2, status)
      assert.equal("", out)
      assert.truthy(has(err, "cache-resource: the app does not load: " .. dir .. "/broken.lua:1: "), err)
      assert.truthy(has(err, "near '='"), err)
      support.remove_tree(dir)
    end)
  end)

  describe("run from this checkout", function()
    local lua, root = support.checkout_lua()
    local command = lua .. " " .. support.shell_quote(root .. "/bin/cache-resource")

    it("serves the app, prints its URL on stdout, finds modules next to it, and exits 0 on SIGTERM", function()
      local dir = app_dir()
      local p = support.spawn(command .. " run " .. support.shell_quote(dir .. "/app.lua")
        .. " --port 0 --max-sessions 1 --idle 60")
      local url = p:first_line()
      assert(url, "no URL on stdout: " .. p:stderr())
      assert.truthy(url:match("^http://127%.0%.0%.1:%d+/$"), url)
      local status, body = support.http_get(url)
      assert.equal(200, status)
      assert.truthy(has(body, '<h1 class="cr-title">Hello from the app directory</h1>'))
      assert.truthy(has(body, "answer 42"))
      support.http_get(url) -- a second browser: over --max-sessions 1, the first one's session ends
      local _, health = support.http_get(url .. "healthz")
      assert.equal("ok\n", health)
      local _, text = support.http_get(url .. "metrics")
      local m = support.parse_metrics(text)
      assert.equal(1, m.samples["cache_resource_sessions"])
      assert.equal(1, m.samples['cache_resource_misses_total{function="cli-answer",kind="resource"}'])
      assert.equal(1, m.samples['cache_resource_hits_total{function="cli-answer",kind="resource"}'])
      assert.equal(3, m.samples['cache_resource_requests_total{status="200"}'])
      if support.shell("command -v promtool >/dev/null") then
        local file = support.write_file(dir .. "/metrics.txt", text)
        local ok, verdict = support.shell("promtool check metrics <" .. support.shell_quote(file) .. " 2>&1")
        assert(ok, verdict)
      end
      local code, out, err = p:finish("TERM")
      assert.equal(0, code, err)
      assert.equal(url .. "\n", out)
      assert.truthy(has(err, "cache_resource: serving " .. dir .. "/app.lua on " .. url))
      assert.truthy(has(err, "cache_resource: stopping (signal 15)"))
      support.remove_tree(dir)
    end)

    it("exits 2 naming the file when the app is missing, without serving", function()
      local p = support.spawn(command .. " run /nonexistent/app.lua")
      local code, out, err = p:finish()
      assert.equal(2, code)
      assert.equal("", out)
      assert.equal("cache-resource: the app does not load: cannot open /nonexistent/app.lua: "
        .. "No such file or directory\n", err)
    end)

    it("exits 1 naming the address when the port is taken", function()
      local taken = assert(socket.listen("127.0.0.1", 0))
      assert(taken:listen())
      local _, _, port = taken:localname()
      local dir = app_dir()
      local p = support.spawn(command .. " run " .. support.shell_quote(dir .. "/app.lua") .. " --port " .. port)
      local code, out, err = p:finish()
      taken:close()
      support.remove_tree(dir)
      assert.equal(1, code)
      assert.equal("", out)
      assert.truthy(has(err, "cache-resource: cache_resource.server: cannot listen on 127.0.0.1:" .. port .. ": "),
        err)
    end)

    it("exits 1 saying how to install lua-cqueues when it is not installed", function()
      local only = support.checkout_lua(true)
      local dir = app_dir()
      local p = support.spawn(only .. " " .. support.shell_quote(root .. "/bin/cache-resource") .. " run "
        .. support.shell_quote(dir .. "/app.lua"))
      local code, out, err = p:finish()
      support.remove_tree(dir)
      assert.equal(1, code)
      assert.equal("", out)
      assert.truthy(has(err, "cache-resource: cache_resource.server needs lua-cqueues, which is not installed: "
        .. "apt-get install lua-cqueues (Debian, Ubuntu), or luarocks install cqueues"), err)
    end)

    it("shows warnings: one line on stderr each, naming the function, for on_release and a background refresh",
      function()
        local dir = app_dir()
        local p = support.spawn(command .. " run " .. support.shell_quote(dir .. "/flaky.lua") .. " --port 0")
        local code, _, err = run_flaky(p, true)
        support.remove_tree(dir)
        assert.equal(0, code, err)
        assert.equal(2, lines_with(err, "on_release of cli-flaky-release raised an error: release boom"), err)
        assert.equal(1, lines_with(err, "the background refresh of cli-flaky-refresh failed: refresh boom"), err)
      end)
  end)

  describe("serve()", function()
    local lua = support.checkout_lua()
    -- serve{} in a process of its own; `options` is Lua table syntax
    local function serve(dir, options)
      local driver = support.write_file(dir .. "/serve.lua", string.format([[
require("cache_resource.server").serve { script = %q, port = 0, %s
  ready = function(srv) io.stdout:write(srv.url, "\n"); io.stdout:flush() end }
]], dir .. "/flaky.lua", options))
      return support.spawn(lua .. " " .. support.shell_quote(driver))
    end

    it("turns warnings on: a failing on_release or background refresh writes one line naming the function",
      function()
        local dir = app_dir()
        local code, _, err = run_flaky(serve(dir, ""), true)
        support.remove_tree(dir)
        assert.equal(0, code, err)
        assert.equal(2, lines_with(err, "on_release of cli-flaky-release raised an error: release boom"), err)
        assert.equal(1, lines_with(err, "the background refresh of cli-flaky-refresh failed: refresh boom"), err)
      end)

    it("writes no warning with warnings = false", function()
      local dir = app_dir()
      local code, _, err = run_flaky(serve(dir, "warnings = false,"), false)
      support.remove_tree(dir)
      assert.equal(0, code, err)
      assert.equal(0, lines_with(err, "cli-flaky"), err)
      -- what it does write are its log lines
      for line in err:gmatch("[^\n]+") do
        assert.truthy(line:match("^cache_resource: ") or line:match("^GET /[%w]* %-> %d+$"), line)
      end
    end)
  end)
end)
