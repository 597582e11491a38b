-- make serve's server (cache_resource.server), driven over loopback in-process.
local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local cr = require "cache_resource"
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
if ui.checkbox("Show more") then ui.text("more shown") end
ui.slider("Level", { min = 0, max = 10 })
]]

-- Starts a server on an ephemeral port and runs `client(port)` against it.
local function with_server(opts, client)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(SCRIPT)
  f:close()
  opts.script, opts.port, opts.log = path, 0, function() end
  local cq = cqueues.new()
  local srv = server.new(opts):start(cq)
  local failure, done
  cq:wrap(function()
    local ok, err = pcall(client, srv.bound_port, srv)
    if not ok then failure = err end
    for id, s in pairs(srv.sessions) do srv.sessions[id] = nil; s.ui:close() end
    done = true
  end)
  local deadline = cqueues.monotime() + 10
  while not done and cqueues.monotime() < deadline do
    local ok, err = cq:step(0.05)
    if not ok then failure = failure or err end
  end
  srv.listener:close()
  os.remove(path)
  if failure then error(failure, 0) end
  assert(done, "the client did not finish in time")
end

-- One raw HTTP exchange; returns status, headers, body.
local function http(port, raw)
  local conn = assert(socket.connect("127.0.0.1", port))
  conn:setmode("b", "b")
  conn:settimeout(5)
  conn:write(raw)
  conn:flush()
  local status = tonumber(conn:read("*l"):match("^HTTP/1%.1 (%d+)"))
  local headers = {}
  for line in conn:lines("*l") do
    if line == "" or line == "\r" then break end
    local k, v = line:match("^([%w%-]+):%s*(.-)\r?$")
    headers[k:lower()] = v
  end
  local body = conn:read(tonumber(headers["content-length"]) or 0) or ""
  conn:close()
  return status, headers, body
end

local function get(port, path, cookie)
  return http(port, "GET " .. path .. " HTTP/1.1\r\nHost: x\r\n" .. (cookie and ("Cookie: " .. cookie .. "\r\n") or "") .. "\r\n")
end

local function post(port, path, body, cookie)
  return http(port, "POST " .. path .. " HTTP/1.1\r\nHost: x\r\nContent-Length: " .. #body .. "\r\n"
    .. (cookie and ("Cookie: " .. cookie .. "\r\n") or "") .. "\r\n" .. body)
end

describe("the web server (make serve)", function()
  before_each(support.reset)

  it("serves the page, keeps a session by cookie, replays, and re-runs after a widget change", function()
    with_server({}, function(port)
      local status, headers, body = get(port, "/")
      assert.equal(200, status)
      assert.matches("text/html", headers["content-type"])
      local cookie = headers["set-cookie"]:match("^(cr_session=%x+)")
      assert.truthy(cookie)
      assert.truthy(body:find('<h2 class="cr-header">Replayed header</h2>', 1, true))
      assert.truthy(body:find('name="checkbox:Show more"', 1, true))
      local _, again_headers, again = get(port, "/", cookie)
      assert.is_nil(again_headers["set-cookie"])
      assert.truthy(again:find("Replayed header", 1, true))
      assert.equal(1, support.stat("server-load").misses)
      assert.equal(1, support.stat("server-load").hits)
      assert.equal(204, (post(port, "/set", "id=checkbox%3AShow+more&value=true", cookie)))
      local _, _, after = get(port, "/", cookie)
      assert.truthy(after:find("more shown", 1, true))
      local _, _, stats = get(port, "/stats")
      assert.truthy(stats:find('"name": "server-load"', 1, true))
    end)
  end)

  it("frames responses exactly: CRLF headers and a Content-Length that matches the body", function()
    with_server({}, function(port)
      local conn = assert(socket.connect("127.0.0.1", port))
      conn:setmode("b", "b")
      conn:settimeout(5)
      conn:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      conn:flush()
      local raw = conn:read("*a")
      conn:close()
      local head, body = raw:match("^(.-\r\n)\r\n(.*)$")
      assert.truthy(head)
      assert.is_nil(head:find("\r\r", 1, true))
      assert.equal(tonumber(head:match("Content%-Length: (%d+)")), #body)
      assert.truthy(body:find("<!doctype html>", 1, true))
    end)
  end)

  it("answers bad requests with 4xx and keeps serving", function()
    with_server({ max_body = 1024 }, function(port)
      local _, headers = get(port, "/")
      local cookie = headers["set-cookie"]:match("^(cr_session=%x+)")
      assert.equal(400, (post(port, "/set", "id=nope&value=1", cookie)))           -- unknown widget
      assert.equal(400, (post(port, "/set", "id=slider%3ALevel&value=99", cookie))) -- out of range
      assert.equal(400, (post(port, "/set", "id=slider%3ALevel&value=abc", cookie)))
      assert.equal(400, (post(port, "/set", "%zz", cookie)))                        -- malformed body
      assert.equal(400, (post(port, "/set", "id=checkbox%3AShow+more&value=true"))) -- no session
      assert.equal(413, (post(port, "/set", string.rep("a", 5000), cookie)))        -- oversized
      assert.equal(400, (http(port, "GARBAGE\r\n\r\n")))
      assert.equal(431, (http(port, "GET /" .. string.rep("a", 9000) .. " HTTP/1.1\r\n\r\n")))
      assert.equal(404, (get(port, "/missing")))
      assert.equal(405, (http(port, "DELETE / HTTP/1.1\r\n\r\n")))
      assert.equal(200, (get(port, "/healthz")))
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

  it("parses forms and converts posted values by widget kind", function()
    assert.same({ id = "a b", value = "x&y" }, server.parse_form("id=a+b&value=x%26y"))
    assert.is_nil(server.parse_form("id=%4"))
    assert.is_nil(server.parse_form("=x"))
    assert.equal(true, server.convert("checkbox", {}, "true"))
    assert.equal(7, server.convert("slider", {}, "7"))
    assert.equal(2, server.convert("selectbox", { options = { 1, 2 } }, "2"))
    assert.is_nil(server.convert("selectbox", { options = { 1, 2 } }, "3"))
    assert.is_nil(server.convert("file_uploader", {}, "x"))
  end)
end)
