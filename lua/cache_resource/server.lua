--- cache_resource.server: serves an app script as a web page (make serve).
--
-- Every browser gets a session (a cookie) and its own ui.session; a GET of
-- "/" re-runs the script in that session and returns page:render("html");
-- a widget change posts to "/set" and the page reloads. Sessions idle for
-- `idle` seconds end, which releases their session-scoped entries. Built on
-- lua-cqueues; binds to loopback unless told otherwise.
local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local condition = require "cqueues.condition"
local cr = require "cache_resource"
local ui = require "cache_resource.ui"
require "cache_resource.cqueues" -- waiting coroutines park on condition variables; refreshes run in the loop

local M = {}

local STATUS = { [200] = "OK", [204] = "No Content", [400] = "Bad Request", [404] = "Not Found",
  [405] = "Method Not Allowed", [408] = "Request Timeout", [413] = "Payload Too Large",
  [431] = "Request Header Fields Too Large", [500] = "Internal Server Error" }

local PAGE = [[<!doctype html>
<html><head><meta charset="utf-8"><title>%s</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
.cr-alert { padding: .6rem .8rem; border-radius: .4rem; margin: .5rem 0; }
.cr-success { background: #e3f6e8; } .cr-info { background: #e4eefb; } .cr-warning { background: #fdf3d6; }
.cr-error, .cr-exception { background: #fbe3e3; white-space: pre-wrap; }
.cr-container { border-left: 3px solid #ddd; padding-left: .8rem; }
label { display: block; margin: .6rem 0; } pre { background: #f5f5f5; padding: .5rem; white-space: pre-wrap; word-break: break-word; }
small.cr-caption { color: #777; display: block; }
</style></head><body>
%s
<script>
document.querySelectorAll('[data-widget]').forEach(function (el) {
  var button = el.tagName === 'BUTTON';
  el.addEventListener(button ? 'click' : 'change', function (e) {
    e.preventDefault();
    var value = el.type === 'checkbox' ? String(el.checked) : (button ? 'true' : el.value);
    fetch('/set', { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ id: el.name, value: value }) }).then(function () { location.reload(); });
  });
});
</script></body></html>
]]

local function url_decode(s)
  s = s:gsub("+", " ")
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- Parses an application/x-www-form-urlencoded body; nil on malformed input.
function M.parse_form(body)
  local out = {}
  if body == "" then return out end
  for pair in body:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=(.*)$")
    if not k or k == "" then return nil end
    if pair:gsub("%%%x%x", ""):find("%%") then return nil end -- a stray or short escape
    out[url_decode(k)] = url_decode(v)
  end
  return out
end

local function random_id()
  local f = io.open("/dev/urandom", "rb")
  local bytes = f and f:read(16) or tostring(os.time()) .. tostring({})
  if f then f:close() end
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

--- Converts a posted string to the widget's value type; nil, message on error.
function M.convert(kind, opts, text)
  if kind == "checkbox" or kind == "toggle" or kind == "button" then
    if text == "true" or text == "on" then return true end
    if text == "false" or text == "off" then return false end
    return nil, kind .. " takes true or false"
  elseif kind == "slider" or kind == "number_input" then
    local n = tonumber(text)
    if not n then return nil, kind .. " takes a number" end
    return math.tointeger(n) or n
  elseif kind == "selectbox" or kind == "radio" then
    for _, o in ipairs(opts.options or {}) do
      if tostring(o) == text then return o end
    end
    return nil, "not one of the options"
  elseif kind == "text_input" then
    return text
  end
  return nil, kind .. " cannot be set from the page"
end

local Server = {}
Server.__index = Server

--- server.new{ script = path, host = "127.0.0.1", port = 8501, idle = 900,
--  max_body = 65536, title = "cache_resource app", log = function(msg) end }
function M.new(opts)
  assert(type(opts) == "table" and type(opts.script) == "string", "cache_resource.server.new needs { script = path }")
  return setmetatable({
    script = opts.script,
    host = opts.host or "127.0.0.1",
    port = opts.port or 8501,
    idle = opts.idle or 900,
    max_body = opts.max_body or 65536,
    title = opts.title or "cache_resource app",
    log = opts.log or function(msg) io.stderr:write(msg, "\n") end,
    sessions = {},            -- cookie id -> { ui = ui session, seen = time }
    running = false,          -- one script run at a time: ui keeps one current page
    idle_cond = condition.new(),
  }, Server)
end

local function respond(conn, code, body, headers)
  local lines = { string.format("HTTP/1.1 %d %s", code, STATUS[code] or "Status") }
  for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  lines[#lines + 1] = "Content-Length: " .. #body
  lines[#lines + 1] = "Connection: close"
  conn:write(table.concat(lines, "\r\n"), "\r\n\r\n", body)
  conn:flush()
end

-- Reads one request; returns it, or nil, status, message.
local function read_request(conn, max_body)
  local line = conn:read("*L")
  if not line then return nil, 400, "no request line" end
  if line:sub(-1) ~= "\n" then return nil, 431, "request line too long" end
  local method, target = line:match("^(%u+) (%S+) HTTP/1%.[01]\r?\n$")
  if not method then return nil, 400, "malformed request line" end
  local headers = {}
  for _ = 1, 100 do
    local h = conn:read("*L")
    if not h then return nil, 400, "headers cut short" end
    if h:sub(-1) ~= "\n" then return nil, 431, "header line too long" end
    if h == "\r\n" or h == "\n" then
      local body = ""
      local len = headers["content-length"]
      if len then
        len = tonumber(len:match("^%s*(%d+)%s*$"))
        if not len then return nil, 400, "bad Content-Length" end
        if len > max_body then return nil, 413, "body larger than " .. max_body .. " bytes" end
        body = len > 0 and conn:read(len) or ""
        if not body or #body ~= len then return nil, 400, "body cut short" end
      end
      return { method = method, path = target:match("^[^?]*"), headers = headers, body = body }
    end
    local k, v = h:match("^([%w%-]+):%s*(.-)%s*\r?\n$")
    if not k then return nil, 400, "malformed header" end
    headers[k:lower()] = v
  end
  return nil, 431, "too many headers"
end

function Server:session_for(req)
  local id = (req.headers.cookie or ""):match("cr_session=(%x+)")
  local s = id and self.sessions[id]
  return s, id
end

-- Runs the script for one session; runs never interleave, even if a
-- cached function yields to the scheduler.
function Server:run(session)
  while self.running do self.idle_cond:wait(0.05) end
  self.running = true
  local ok, page = pcall(session.ui.run, session.ui, self.script)
  self.running = false
  self.idle_cond:signal()
  if not ok then error(page, 0) end
  return page
end

function Server:handle(req)
  local now = cqueues.monotime()
  if req.path == "/" then
    if req.method ~= "GET" then return 405, "use GET for /\n" end
    local s, id = self:session_for(req)
    local headers = { ["Content-Type"] = "text/html; charset=utf-8", ["Cache-Control"] = "no-store" }
    if not s then
      id = random_id()
      s = { ui = ui.session(id) }
      self.sessions[id] = s
      headers["Set-Cookie"] = "cr_session=" .. id .. "; Path=/; HttpOnly; SameSite=Strict"
    end
    s.seen = now
    local page = self:run(s)
    return 200, string.format(PAGE, self.title, page:render("html")), headers
  elseif req.path == "/set" then
    if req.method ~= "POST" then return 405, "use POST for /set\n" end
    local s = self:session_for(req)
    if not s then return 400, "no session: load / first\n" end
    s.seen = now
    local form = M.parse_form(req.body)
    if not form or not form.id or not form.value then return 400, "expected id=...&value=...\n" end
    local w = s.ui.known[form.id]
    if not w then return 400, "unknown widget '" .. form.id .. "'\n" end
    local value, err = M.convert(w.kind, w.opts, form.value)
    if value == nil then return 400, err .. "\n" end
    local ok, msg = pcall(s.ui.set, s.ui, form.id, value)
    if not ok then return 400, tostring(msg) .. "\n" end
    return 204, ""
  elseif req.path == "/stats" then
    if req.method ~= "GET" then return 405, "use GET for /stats\n" end
    return 200, ui.to_json(cr.stats()) .. "\n", { ["Content-Type"] = "application/json" }
  elseif req.path == "/healthz" then
    return 200, "ok\n"
  end
  return 404, "not found\n"
end

function Server:serve_connection(conn)
  conn:setmode("b", "b") -- text mode would turn every \n we write into \r\n
  conn:settimeout(10)
  conn:setmaxline(8192)
  local req, code, msg = read_request(conn, self.max_body)
  local body, headers
  if req then
    local ok, c, b, h = pcall(self.handle, self, req)
    if ok then code, body, headers = c, b, h
    else
      self.log("cache_resource.server: " .. tostring(c))
      code, body = 500, "internal error\n"
    end
  else
    body = msg .. "\n"
  end
  respond(conn, code, body, headers or { ["Content-Type"] = "text/plain; charset=utf-8" })
  self.log(string.format("%s %s -> %d", req and req.method or "-", req and req.path or "-", code))
  conn:close()
end

--- Ends sessions idle for longer than `idle` seconds; returns how many.
function Server:reap(now)
  local n = 0
  for id, s in pairs(self.sessions) do
    if now - s.seen > self.idle then
      self.sessions[id] = nil
      s.ui:close()
      n = n + 1
    end
  end
  return n
end

--- Listens and adds the accept loop and the idle reaper to the controller.
function Server:start(cq)
  self.listener = assert(socket.listen(self.host, self.port))
  local _, host, port = self.listener:localname()
  self.bound_port = port
  self.log(string.format("cache_resource: serving %s on http://%s:%d/", self.script, host, port))
  cq:wrap(function()
    while true do
      local conn = self.listener:accept()
      if conn then
        cq:wrap(function()
          local ok, err = pcall(self.serve_connection, self, conn)
          if not ok then
            self.log("cache_resource.server: connection failed: " .. tostring(err))
            pcall(conn.close, conn)
          end
        end)
      end
    end
  end)
  cq:wrap(function()
    while true do
      cqueues.sleep(math.min(5, math.max(0.05, self.idle / 4)))
      local n = self:reap(cqueues.monotime())
      if n > 0 then self.log(string.format("cache_resource: ended %d idle session(s)", n)) end
    end
  end)
  return self
end

--- Serves until the process is stopped.
function M.serve(opts)
  local cq = cqueues.new()
  M.new(opts):start(cq)
  local ok, err = cq:loop()
  if not ok then error(err, 0) end
end

return M
