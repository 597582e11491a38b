-- The web server (cache_resource.server), driven over loopback in-process,
-- and its request handler called directly.
local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local cr = require "cache_resource"
local ui = require "cache_resource.ui"
local server = require "cache_resource.server"
local support = require "support"

local SCRIPT = [[
local cr = require "cache_resource"
local ui = require "cache_resource.ui"
local load = cr(function() ui.header("Replayed header"); return {} end, { name = "server-load" })
load()
local per_user = cr(function() return { } end, { scope = "session", name = "server-per-user",
  on_release = function() _G.SERVER_RELEASED = (_G.SERVER_RELEASED or 0) + 1 end })
per_user()
ui.sidebar:header("Settings")
if ui.sidebar:checkbox("Show more") then ui.text("more shown") end
local level = ui.sidebar:slider("Level", 0, 10, 0, 2)
local left, right = ui.columns(2)
left:text("level is " .. level)
right:selectbox("Pick", { "a", "b" })
if _G.SERVER_SLOW then
  cr(function() _G.SERVER_SLOW(); return 1 end,
    { show_spinner = "Working hard", show_time = true, name = "server-slow" })()
end
ui.text("the end")
]]

local function write_script(text)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(text or SCRIPT)
  f:close()
  return path
end

-- Starts a server on an ephemeral port, runs `client(port, srv)` against it,
-- then stops the server and checks that its loop returns.
local function with_server(opts, client)
  local path = write_script()
  opts.script, opts.port, opts.log = path, 0, function() end
  local cq = cqueues.new()
  local srv = server.new(opts):start(cq)
  local failure, done
  cq:wrap(function()
    local ok, err = pcall(client, srv.bound_port, srv)
    if not ok then failure = err end
    srv:stop()
    done = true
  end)
  local deadline = cqueues.monotime() + 10
  while not cq:empty() and cqueues.monotime() < deadline do
    local ok, err = cq:step(0.05)
    if not ok then failure = failure or err end
  end
  os.remove(path)
  if failure then error(failure, 0) end
  assert(done, "the client did not finish in time")
  assert(cq:empty(), "the server's loop did not end after stop()")
end

local function connect(port)
  local conn = assert(socket.connect("127.0.0.1", port))
  conn:setmode("b", "b")
  conn:settimeout(5)
  return conn
end

-- Reads a response: status, headers, body (chunked bodies decoded).
local function read_response(conn)
  local status = tonumber(conn:read("*l"):match("^HTTP/1%.1 (%d+)"))
  local headers = {}
  for line in conn:lines("*l") do
    if line == "" or line == "\r" then break end
    local k, v = line:match("^([%w%-]+):%s*(.-)\r?$")
    headers[k:lower()] = v
  end
  local body
  if headers["transfer-encoding"] == "chunked" then body = support.decode_chunked(conn:read("*a") or "")
  else body = conn:read(tonumber(headers["content-length"]) or 0) or "" end
  conn:close()
  return status, headers, body
end

-- One raw HTTP exchange; returns status, headers, body.
local function http(port, raw)
  local conn = connect(port)
  conn:write(raw)
  conn:flush()
  return read_response(conn)
end

local function get(port, path, cookie)
  return http(port, "GET " .. path .. " HTTP/1.1\r\nHost: x\r\n"
    .. (cookie and ("Cookie: " .. cookie .. "\r\n") or "") .. "\r\n")
end

local function post(port, path, body, cookie)
  return http(port, "POST " .. path .. " HTTP/1.1\r\nHost: x\r\nContent-Length: " .. #body .. "\r\n"
    .. (cookie and ("Cookie: " .. cookie .. "\r\n") or "") .. "\r\n" .. body)
end

local function has(text, fragment) return text:find(fragment, 1, true) ~= nil end

-- The final page of a streamed body: the form after the last snapshot.
local function final_page(body)
  return body:match('<form class="cr%-stage cr%-final".-</form>')
end

describe("the web server", function()
  before_each(function()
    support.reset()
    _G.SERVER_SLOW = nil
  end)

  it("serves the page, keeps a session by cookie, replays, and re-runs after a widget change", function()
    with_server({}, function(port)
      local status, headers, body = get(port, "/")
      assert.equal(200, status)
      assert.matches("text/html", headers["content-type"])
      local cookie = headers["set-cookie"]:match("^(cr_session=%x+)")
      assert.truthy(cookie)
      local page = final_page(body)
      assert.truthy(page)
      assert.truthy(has(page, '<h2 class="cr-header">Replayed header</h2>'))
      assert.truthy(has(page, '<aside class="cr-sidebar">'))
      assert.truthy(has(page, 'name="checkbox:Show more"'))
      assert.truthy(has(page, '<div class="cr-columns'))
      assert.truthy(has(body, '<header class="cr-bar">'))
      local _, again_headers, again = get(port, "/", cookie)
      assert.is_nil(again_headers["set-cookie"])
      assert.truthy(has(final_page(again), "Replayed header"))
      assert.equal(1, support.stat("server-load").misses)
      assert.equal(1, support.stat("server-load").hits)
      assert.equal(204, (post(port, "/set", "id=checkbox%3AShow+more&value=true", cookie)))
      assert.equal(204, (post(port, "/set", "id=slider%3ALevel&value=4", cookie)))
      assert.equal(204, (post(port, "/set", "id=selectbox%3APick&value=2", cookie)))
      local _, _, after = get(port, "/", cookie)
      page = final_page(after)
      assert.truthy(has(page, "more shown"))
      assert.truthy(has(page, "level is 4"))
      assert.truthy(has(page, '<option value="2" selected>b</option>'))
      local _, stats_headers, stats = get(port, "/stats")
      assert.equal("application/json", stats_headers["content-type"])
      assert.truthy(has(stats, '"name":"server-load"'))
    end)
  end)

  it("streams the spinner to the browser before a CPU-bound cached function starts, and removes it", function()
    with_server({}, function(port)
      local conn = connect(port)
      conn:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      conn:flush()
      local seen_before_start
      _G.SERVER_SLOW = function()
        -- never yields: whatever the client has now was sent before this ran
        local got = {}
        for _ = 1, 100 do
          local data = conn:recv(-65536, "b")
          if not data then break end
          got[#got + 1] = data
        end
        seen_before_start = table.concat(got)
        conn:unget(seen_before_start) -- for read_response below
      end
      local _, _, body = read_response(conn)
      assert.truthy(seen_before_start)
      assert.truthy(has(seen_before_start, "Transfer-Encoding: chunked"))
      assert.truthy(has(seen_before_start, '<div class="cr-spinner" data-show-time>'))
      assert.truthy(has(seen_before_start, "Working hard"))
      assert.truthy(has(seen_before_start, "Replayed header")) -- the page so far comes with it
      assert.is_nil(seen_before_start:find("the end", 1, true))
      -- the snapshot with the spinner arrives whole, then the final page, which has none
      local snapshot_at = body:find('<div class="cr%-stage" inert>\n<div class="cr%-page">.-cr%-spinner'
        .. '.-</div><i class="cr%-done"></i>')
      local final_at = body:find('<form class="cr-stage cr-final"', 1, true)
      assert.truthy(snapshot_at)
      assert.truthy(final_at and final_at > snapshot_at)
      assert.truthy(body:find('</form><i class="cr-done"></i>', final_at, true))
      local page = final_page(body)
      assert.is_nil(page:find("cr-spinner", 1, true))
      assert.truthy(has(page, "the end"))
      assert.truthy(has(body, "#cr-status{visibility:hidden}"))
    end)
  end)

  it("frames responses exactly: CRLF headers, chunks, and a Content-Length that matches the body", function()
    with_server({}, function(port)
      for _, path in ipairs({ "/", "/healthz" }) do
        local conn = connect(port)
        conn:write("GET " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n")
        conn:flush()
        local raw = conn:read("*a")
        conn:close()
        local head, body = raw:match("^(.-\r\n)\r\n(.*)$")
        assert.truthy(head)
        assert.is_nil(head:find("\r\r", 1, true))
        if path == "/" then
          assert.truthy(has(head, "Transfer-Encoding: chunked"))
          assert.truthy(has(support.decode_chunked(body), "<!doctype html>"))
          assert.equal("0\r\n\r\n", body:sub(-5))
        else
          assert.equal(tonumber(head:match("Content%-Length: (%d+)")), #body)
          assert.equal("ok\n", body)
        end
      end
      -- an HTTP/1.0 client gets the page unframed, ended by the close
      local conn = connect(port)
      conn:write("GET / HTTP/1.0\r\n\r\n")
      conn:flush()
      local raw = conn:read("*a")
      conn:close()
      local head, body = raw:match("^(.-\r\n)\r\n(.*)$")
      assert.truthy(has(head, "HTTP/1.1 200 OK"))
      assert.is_nil(head:find("Transfer-Encoding", 1, true))
      assert.is_nil(head:find("Content-Length", 1, true))
      assert.equal("<!doctype html>", body:sub(1, 15))
      assert.equal("</body></html>\n", body:sub(-15))
    end)
  end)

  it("answers bad requests with 4xx and keeps serving", function()
    with_server({ max_body = 1024 }, function(port)
      local _, headers = get(port, "/")
      local cookie = headers["set-cookie"]:match("^(cr_session=%x+)")
      local function status(code, body) assert.equal(code, (post(port, "/set", body, cookie)), body) end
      status(400, "id=nope&value=1")                      -- unknown widget
      status(400, "id=slider%3ALevel&value=99")           -- out of range
      status(400, "id=slider%3ALevel&value=3")            -- not a step
      status(400, "id=slider%3ALevel&value=abc")          -- not a number
      status(400, "id=selectbox%3APick&value=3")          -- no third option
      status(400, "id=checkbox%3AShow+more")              -- no value
      status(400, "%zz")                                  -- malformed body
      assert.equal(400, (post(port, "/set", "id=checkbox%3AShow+more&value=true"))) -- no session
      assert.equal(413, (post(port, "/set", string.rep("a", 5000), cookie)))        -- oversized
      assert.equal(400, (http(port, "GARBAGE\r\n\r\n")))
      assert.equal(431, (http(port, "GET /" .. string.rep("a", 9000) .. " HTTP/1.1\r\n\r\n")))
      assert.equal(404, (get(port, "/missing")))
      assert.equal(405, (http(port, "DELETE / HTTP/1.1\r\n\r\n")))
      assert.equal(405, (get(port, "/set")))
      local _, _, rejected = post(port, "/set", "id=slider%3ALevel&value=99", cookie)
      assert.truthy(has(rejected, "99 is outside [0, 10]"))
      assert.equal(200, (get(port, "/healthz")))
    end)
  end)

  it("closes a connection that sends no request without answering it, and counts no request", function()
    with_server({ timeout = 0.3 }, function(port, srv)
      local idle = connect(port) -- a browser's connection opened ahead of need, never used
      local started = cqueues.monotime()
      local got = idle:read("*a") -- until the server closes it
      idle:close()
      assert.is_true(got == nil or got == "", "the server wrote to a connection that sent nothing: " .. tostring(got))
      assert.is_true(cqueues.monotime() - started >= 0.25, "closed before the timeout")
      assert.equal(200, (get(port, "/healthz")))
      assert.same({ [200] = 1 }, srv.requests)
    end)
  end)

  it("tells a browser whose session has ended, and starts a new one", function()
    with_server({}, function(port)
      local gone = "cr_session=0123456789abcdef0123456789abcdef"
      assert.equal(410, (post(port, "/set", "id=checkbox%3AShow+more&value=true", gone)))
      local status, headers, body = get(port, "/", gone)
      assert.equal(200, status)
      local fresh = headers["set-cookie"]:match("^(cr_session=%x+)")
      assert.truthy(fresh)
      assert.not_equal(gone, fresh)
      assert.truthy(has(body, '<div class="cr-notice" role="status">Your previous session has ended'))
      local _, again_headers, again = get(port, "/", fresh)
      assert.is_nil(again_headers["set-cookie"])
      assert.is_nil(again:find('<div class="cr-notice"', 1, true))
    end)
  end)

  it("takes a whole form from a browser without JavaScript and redirects back", function()
    with_server({}, function(port)
      local _, headers = get(port, "/")
      local cookie = headers["set-cookie"]:match("^(cr_session=%x+)")
      -- a ticked checkbox posts its hidden "false" and then "true"
      local status, redirect = post(port, "/set",
        "checkbox%3AShow+more=false&checkbox%3AShow+more=true&slider%3ALevel=6&selectbox%3APick=2", cookie)
      assert.equal(303, status)
      assert.equal("/", redirect.location)
      local page = final_page(select(3, get(port, "/", cookie)))
      assert.truthy(has(page, "more shown"))
      assert.truthy(has(page, "level is 6"))
      -- a refused value is reported on the next page, the others still apply
      post(port, "/set", "checkbox%3AShow+more=false&slider%3ALevel=7", cookie)
      local _, _, body = get(port, "/", cookie)
      assert.truthy(has(body, "Not applied: cache_resource.ui: slider &#39;Level&#39;: 7 is not a step of 2 from 0"))
      assert.is_nil(final_page(body):find("more shown", 1, true))
      assert.truthy(has(final_page(body), "level is 6"))
    end)
  end)

  it("ends idle sessions, releasing their session-scoped entries", function()
    with_server({ idle = 0.2 }, function(port, srv)
      _G.SERVER_RELEASED = 0
      get(port, "/")
      assert.equal(1, support.stat("server-per-user").entries)
      local deadline = cqueues.monotime() + 3
      while next(srv.sessions) and cqueues.monotime() < deadline do cqueues.sleep(0.05) end
      assert.is_nil(next(srv.sessions))
      assert.equal(1, _G.SERVER_RELEASED)
      assert.equal(0, support.stat("server-per-user").entries)
    end)
  end)

  it("stop() closes the listener, ends every session and lets the loop return", function()
    local path = write_script()
    local cq = cqueues.new()
    local srv = server.new({ script = path, port = 0, log = function() end }):start(cq)
    _G.SERVER_RELEASED = 0
    cq:wrap(function()
      get(srv.bound_port, "/")
      get(srv.bound_port, "/")
      assert.equal(2, srv.count)
      srv:stop()
    end)
    local ok, err = cq:loop(10)
    os.remove(path)
    assert(ok, err)
    assert.is_true(cq:empty())
    assert.equal(0, srv.count)
    assert.equal(2, _G.SERVER_RELEASED)
    local connected = pcall(function() assert(socket.connect("127.0.0.1", srv.bound_port):connect(1)) end)
    assert.is_false(connected)
    srv:stop() -- twice is harmless
  end)

  it("caps live sessions: a flood of cookieless requests keeps memory bounded", function()
    local path = write_script("local ui = require 'cache_resource.ui'\nui.text('hello')\n")
    local srv = server.new({ script = path, max_sessions = 100, log = function() end })
    local function request()
      local code, body = srv:handle({ method = "GET", path = "/", headers = {}, body = "" })
      assert.equal(200, code)
      body(function() end)
    end
    for _ = 1, 1000 do request() end
    collectgarbage("collect")
    local warm = collectgarbage("count")
    assert.equal(100, srv.count)
    for _ = 1, 9000 do request() end
    collectgarbage("collect")
    local grown = collectgarbage("count") - warm
    os.remove(path)
    assert.equal(100, srv.count)
    local live = 0
    for _ in pairs(srv.sessions) do live = live + 1 end
    assert.equal(100, live)
    assert.is_true(grown < 256, string.format("memory grew by %.0f KiB over 9000 requests", grown))
    srv:stop()
  end)

  it("the cap ends the least recently used idle session first", function()
    local path = write_script("local ui = require 'cache_resource.ui'\nui.text('hello')\n")
    local srv = server.new({ script = path, max_sessions = 3, log = function() end })
    local function visit(cookie)
      local _, body, headers = srv:handle({ method = "GET", path = "/", body = "",
        headers = { cookie = cookie and ("cr_session=" .. cookie) or nil } })
      body(function() end)
      return cookie or headers["Set-Cookie"]:match("cr_session=(%x+)")
    end
    local a, b, c = visit(), visit(), visit()
    visit(a)                      -- a is now the most recently used
    srv.sessions[b].busy = 1      -- b is serving a request: not ended
    local d = visit()
    assert.is_nil(srv.sessions[c])
    assert.truthy(srv.sessions[a] and srv.sessions[b] and srv.sessions[d])
    srv.sessions[b].busy = 0
    visit()
    assert.is_nil(srv.sessions[b])
    assert.equal(3, srv.count)
    os.remove(path)
    srv:stop()
  end)

  it("GET /metrics: every cached function's stats() and the server's sessions and requests by status", function()
    with_server({}, function(port, srv)
      local _, headers = get(port, "/")
      local cookie = headers["set-cookie"]:match("^(cr_session=%x+)")
      get(port, "/", cookie)
      get(port, "/")
      assert.equal(404, (get(port, "/nope")))
      assert.equal(405, (post(port, "/metrics", "")))
      local status, mheaders, body = get(port, "/metrics")
      assert.equal(200, status)
      assert.equal("text/plain; version=0.0.4; charset=utf-8", mheaders["content-type"])
      local m = support.parse_metrics(body)
      for _, name in ipairs({ "server-load", "server-per-user" }) do
        local row = support.stat(name)
        for _, field in ipairs({ "hits", "misses", "failures", "evictions", "expirations" }) do
          assert.equal(row[field], m.samples['cache_resource_' .. field .. '_total{function="' .. name
            .. '",kind="resource"}'], name .. " " .. field)
        end
        assert.equal(row.entries, m.samples['cache_resource_entries{function="' .. name .. '",kind="resource"}'])
      end
      assert.equal(srv.count, m.samples["cache_resource_sessions"])
      assert.equal(2, srv.count)
      -- the requests answered before this one
      assert.equal(3, m.samples['cache_resource_requests_total{status="200"}'])
      assert.equal(1, m.samples['cache_resource_requests_total{status="404"}'])
      assert.equal(1, m.samples['cache_resource_requests_total{status="405"}'])
      assert.equal(srv.requests[200], 4)
      local _, _, health = get(port, "/healthz")
      assert.equal("ok\n", health)
    end)
  end)

  it("refuses an app file that is missing or does not compile when it is created, naming it", function()
    assert.has_error(function() server.new({ script = "/nonexistent/app.lua" }) end,
      "cache_resource.server: the app does not load: cannot open /nonexistent/app.lua: No such file or directory")
    local path = write_script("ui.title(\n")
    local ok, err = pcall(server.new, { script = path })
    os.remove(path)
    assert.is_false(ok)
    assert.truthy(has(err, "the app does not load: " .. path .. ":2: "), err)
  end)

  it("serve() with a missing app raises before it listens: nothing is logged as serving", function()
    local logged = {}
    local ok, err = pcall(server.serve, { script = "/nonexistent/missing.lua", port = 0,
      log = function(line) logged[#logged + 1] = line end })
    assert.is_false(ok)
    assert.truthy(has(err, "cannot open /nonexistent/missing.lua"), err)
    assert.same({}, logged)
  end)

  it("serve() calls ready once it listens; an error there stops the server and is raised", function()
    local path = write_script()
    local seen
    local ok, err = pcall(server.serve, { script = path, port = 0, log = function() end, warnings = false,
      ready = function(srv)
        seen = srv
        error("ready failed", 0)
      end })
    os.remove(path)
    assert.is_false(ok)
    assert.equal("ready failed", err)
    assert.equal("http://127.0.0.1:" .. seen.bound_port .. "/", seen.url)
    assert.is_true(seen.stopped)
    local connected = pcall(function() assert(socket.connect("127.0.0.1", seen.bound_port):connect(1)) end)
    assert.is_false(connected)
  end)

  it("checks its options", function()
    assert.has_error(function() server.new({}) end, "cache_resource.server.new needs { script = path or function }")
    assert.has_error(function() server.new({ script = "x", prot = 1 }) end,
      "cache_resource.server: unknown option 'prot'")
    assert.has_error(function() server.new({ script = "x", max_sessions = "9" }) end,
      "cache_resource.server: option 'max_sessions' must be a number, got a string")
    assert.has_error(function() server.new({ script = "x", max_sessions = 0 }) end)
    assert.has_error(function() server.new({ script = "x", warnings = "no" }) end,
      "cache_resource.server: option 'warnings' must be a boolean, got a string")
    assert.has_error(function() server.new({ script = "x", ready = true }) end,
      "cache_resource.server: option 'ready' must be a function, got a boolean")
  end)

  it("serves a script given as a function", function()
    local srv = server.new({ script = function() ui.title("From a function") end, log = function() end })
    local code, body = srv:handle({ method = "GET", path = "/", headers = {}, body = "" })
    local chunks = {}
    body(function(text) chunks[#chunks + 1] = text end)
    assert.equal(200, code)
    assert.truthy(has(final_page(table.concat(chunks)), '<h1 class="cr-title">From a function</h1>'))
    srv:stop()
  end)

  it("parses forms and converts posted values by widget kind", function()
    assert.same({ id = "a b", value = "x&y" }, server.parse_form("id=a+b&value=x%26y"))
    assert.same({ k = "2" }, server.parse_form("k=1&k=2"))
    assert.is_nil(server.parse_form("id=%4"))
    assert.is_nil(server.parse_form("=x"))
    assert.equal(true, server.convert("checkbox", {}, "true"))
    assert.equal(false, server.convert("toggle", {}, "off"))
    assert.is_nil(server.convert("checkbox", {}, "maybe"))
    assert.equal(7, server.convert("slider", {}, "7"))
    assert.equal(0.5, server.convert("number_input", {}, "0.5"))
    assert.equal("b", server.convert("selectbox", { options = { "a", "b" } }, "2"))
    assert.is_nil(server.convert("radio", { options = { 1, 2 } }, "3"))
    assert.is_nil(server.convert("radio", { options = { 1, 2 } }, "1.5"))
    assert.equal("hi there", server.convert("text_input", {}, "hi there"))
    assert.is_nil(server.convert("file_uploader", {}, "x"))
  end)

  it("the UI of a session is left as it was after each request", function()
    local path = write_script()
    local srv = server.new({ script = path, log = function() end })
    local _, body = srv:handle({ method = "GET", path = "/", headers = {}, body = "" })
    local chunks = {}
    body(function(text) chunks[#chunks + 1] = text end)
    os.remove(path)
    assert.is_nil(ui.page())
    assert.is_nil(cr.session())
    assert.is_false(srv.running)
    local s = srv.oldest
    assert.equal(0, s.busy)
    assert.is_nil(s.ui.listener)
    assert.truthy(has(table.concat(chunks), "the end"))
    srv:stop()
  end)
end)
