--- cache_resource.server: serves an app script as a Streamlit-like web page.
--
-- Every browser gets a session (a cookie) and its own ui.session. A GET of
-- "/" re-runs the script in that session and streams the page while the
-- script runs: whenever a cached function misses, the page so far and its
-- spinner are sent at once (before the function starts, even when it never
-- yields), and replaced when it ends. A widget change posts to "/set" and the
-- page re-runs. Without JavaScript the page is a form with an Apply button.
-- Sessions idle for `idle` seconds end, which releases their session-scoped
-- entries; at most `max_sessions` live at once (the least recently used idle
-- one ends first). Built on lua-cqueues; binds to loopback unless told
-- otherwise. Script runs never interleave: ui keeps one current run.
--
--     -- app.lua: a script, re-run for every page view
--     local ui = require "cache_resource.ui"
--     ui.title("Hello")
--
--     require("cache_resource.server").serve { script = "app.lua", port = 8501 }
--
-- Requests: `GET /` (the page), `POST /set` (a widget change: the form
-- fields id and value, or the whole form of the page without JavaScript),
-- `GET /stats` (`cache_resource.stats()` as JSON), `GET /metrics` (the same
-- and the server's counts, for Prometheus: cache_resource.metrics) and
-- `GET /healthz`.
--
-- lua-cqueues is not a dependency of the cache_resource rock: without it,
-- requiring this module raises an error that says how to install it.
local found_cqueues, cqueues = pcall(require, "cqueues")
if not found_cqueues then
  error("cache_resource.server needs lua-cqueues, which is not installed: apt-get install lua-cqueues "
    .. "(Debian, Ubuntu), or luarocks install cqueues\n" .. tostring(cqueues), 0)
end
local socket = require "cqueues.socket"
local condition = require "cqueues.condition"
local errno = require "cqueues.errno"
local cr = require "cache_resource"
local ui = require "cache_resource.ui"
local metrics = require "cache_resource.metrics"
local assets = require "cache_resource.server_assets"
local http = require "cache_resource.server_http"
local esc = require("cache_resource.ui.format").esc

local M = {}

local function url_decode(s)
  s = s:gsub("+", " ")
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- Parses an `application/x-www-form-urlencoded` body.
-- A repeated name keeps its last value (a checkbox posts "false", then
-- "true" when ticked).
-- @tparam string body the request body
-- @treturn ?table name -> value (both decoded), or `nil` when the body is
-- malformed
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
  local bytes = f and f:read(16) or tostring(os.time()) .. tostring({}) .. tostring(os.clock())
  if f then f:close() end
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

--- Converts a posted string to the widget's value. `selectbox` and `radio`
-- post the position of the option, from 1. The value is not range-checked
-- here: `Session:set` does that.
-- @tparam string kind the widget's kind (`"checkbox"`, `"slider"`...)
-- @tparam table params the widget's parameters (`session:widget(id).params`)
-- @tparam string text what the page posted
-- @return the value, or `nil` and a message
function M.convert(kind, params, text)
  if kind == "checkbox" or kind == "toggle" or kind == "button" then
    if text == "true" or text == "on" then return true end
    if text == "false" or text == "off" then return false end
    return nil, kind .. " takes true or false"
  elseif kind == "slider" or kind == "number_input" then
    local n = tonumber(text)
    if not n then return nil, kind .. " takes a number" end
    return n
  elseif kind == "selectbox" or kind == "radio" then
    local i = math.tointeger(tonumber(text))
    local options = params.options or {}
    if i and options[i] ~= nil then return options[i] end
    return nil, "not one of the options"
  elseif kind == "text_input" then
    return text
  end
  return nil, kind .. " cannot be set from the page"
end

local Server = {}
Server.__index = Server

local OPTIONS = { script = "string|function", host = "string", port = "number", idle = "number",
  max_sessions = "number", max_body = "number", timeout = "number", title = "string", log = "function",
  warnings = "boolean", ready = "function" }

--- A new server, not yet listening (see `Server:start`, or `serve`).
-- @tparam table opts the options; only `script` is required:
--
-- * `script` (string or function): the app, a Lua file (loaded anew every
--   run) or a function
-- * `host` (string, default `"127.0.0.1"`) and `port` (number, default
--   8501; 0 picks a free port): where to listen
-- * `idle` (seconds, default 900): sessions idle longer end
-- * `max_sessions` (default 1000): the most sessions alive at once
-- * `max_body` (bytes, default 65536): the largest request body taken
-- * `timeout` (seconds, default 10): how long a client may take to send its
--   request, or to take the next bytes of the page; past it the
--   connection is closed. While the script runs, a client that reads
--   slowly is sent the page as it stands, not every snapshot of it.
-- * `title` (string, default `"cache_resource app"`): the page title
-- * `log` (function): called with each log line (default: to stderr)
-- * `warnings` (boolean, default true) and `ready` (function): for `serve`
--
-- A script given as a path must load (it is loaded again for every run, so
-- edits show on the next page view): a missing file or a syntax error is
-- raised here, naming the file and the reason.
-- @treturn Server the server
function M.new(opts)
  if type(opts) ~= "table" or (type(opts.script) ~= "string" and type(opts.script) ~= "function") then
    error("cache_resource.server.new needs { script = path or function }", 2)
  end
  for k, v in pairs(opts) do
    if not OPTIONS[k] then error("cache_resource.server: unknown option '" .. tostring(k) .. "'", 2) end
    if not OPTIONS[k]:find(type(v), 1, true) then
      error(string.format("cache_resource.server: option '%s' must be a %s, got a %s", k,
        OPTIONS[k]:gsub("|", " or "), type(v)), 2)
    end
  end
  local max_sessions = opts.max_sessions or 1000
  if max_sessions < 1 then error("cache_resource.server: option 'max_sessions' must be at least 1", 2) end
  if type(opts.script) == "string" then
    local chunk, why = loadfile(opts.script)
    if not chunk then error("cache_resource.server: the app does not load: " .. why, 2) end
  end
  return setmetatable({
    script = opts.script,
    host = opts.host or "127.0.0.1",
    port = opts.port or 8501,
    idle = opts.idle or 900,
    max_sessions = max_sessions,
    max_body = opts.max_body or 65536,
    timeout = opts.timeout or 10,
    title = opts.title or "cache_resource app",
    log = opts.log or function(msg) io.stderr:write(msg, "\n") end,
    sessions = {},            -- cookie id -> { id, ui, seen, busy, older, newer }
    requests = {},            -- status code -> requests answered with it (GET /metrics)
    count = 0,                -- live sessions
    oldest = nil, newest = nil, -- the sessions by last use, a doubly linked list
    ended_over_cap = 0,       -- sessions ended by max_sessions since the last log line
    running = false,          -- one script run at a time: ui keeps one current run
    run_done = condition.new(),
    wake = condition.new(),   -- signalled by stop()
    stopped = false,
  }, Server)
end

-- ------------------------------------------------------------ sessions

local function unlink(self, s)
  if not s.linked then return end
  s.linked = false
  if s.older then s.older.newer = s.newer else self.oldest = s.newer end
  if s.newer then s.newer.older = s.older else self.newest = s.older end
  s.older, s.newer = nil, nil
end

--- A server (from `new`). Its sessions are tables `s` with `s.id` (the
-- cookie), `s.ui` (the `cache_resource.ui` session), `s.seen` and `s.busy`.
-- @type Server

--- The port it listens on, once `start` has run (useful with `port = 0`).
-- @tfield integer bound_port

--- Its address, once `start` has run: `"http://127.0.0.1:8501/"`.
-- @tfield string url

--- Marks a session as just used (it becomes the last to be ended by the cap).
-- @tparam table s a session of this server
-- @tparam[opt] number now the time, in `cqueues.monotime` seconds
function Server:touch(s, now)
  s.seen = now or cqueues.monotime()
  if self.newest ~= s then
    unlink(self, s)
    s.older = self.newest
    if self.newest then self.newest.newer = s else self.oldest = s end
    self.newest = s
    s.linked = true
  end
end

--- Ends a session: its session-scoped entries are released. A session
-- this server no longer holds is left alone.
-- @tparam table s a session of this server
function Server:end_session(s)
  if self.sessions[s.id] ~= s then return end
  self.sessions[s.id] = nil
  self.count = self.count - 1
  unlink(self, s)
  local ok, err = pcall(s.ui.close, s.ui)
  if not ok then self.log("cache_resource.server: ending session " .. s.id .. ": " .. tostring(err)) end
end

--- A new session, ending the least recently used idle ones over
-- `max_sessions`.
-- @tparam[opt] number now the time, in `cqueues.monotime` seconds
-- @treturn table the session
function Server:new_session(now)
  while self.count >= self.max_sessions do
    local victim = self.oldest
    while victim and victim.busy > 0 do victim = victim.newer end
    if not victim then break end -- every session is serving a request right now
    self:end_session(victim)
    self.ended_over_cap = self.ended_over_cap + 1
  end
  local id = random_id()
  local s = { id = id, ui = ui.session(id), busy = 0 }
  self.sessions[id] = s
  self.count = self.count + 1
  self:touch(s, now)
  return s
end

--- The session named by the request's cookie.
-- @tparam table req a parsed request (`headers` has lower-case names)
-- @treturn ?table the session, or `nil`
-- @treturn boolean whether the request named one (an ended session's
-- cookie names one that is gone)
function Server:session_for(req)
  local id = (req.headers.cookie or ""):match("cr_session=(%x+)")
  return id and self.sessions[id], id ~= nil
end

--- Ends the sessions idle for longer than `idle` seconds, except those
-- serving a request.
-- @tparam number now the time, in `cqueues.monotime` seconds
-- @treturn integer how many it ended
function Server:reap(now)
  local n = 0
  local s = self.oldest
  while s and now - s.seen > self.idle do
    local newer = s.newer
    if s.busy == 0 then
      self:end_session(s)
      n = n + 1
    end
    s = newer
  end
  return n
end

-- ---------------------------------------------------------------- runs

--- Runs the script for one session; runs never interleave, even if a
-- cached function yields to the scheduler (a run waits for the one in
-- progress). An error of the run itself (not of the script) is raised.
-- @tparam table s a session of this server
-- @treturn cache_resource.ui.Page the page
function Server:run(s)
  while self.running do self.run_done:wait() end
  self.running = true
  s.busy = s.busy + 1
  local ok, page = pcall(s.ui.run, s.ui, self.script)
  s.busy = s.busy - 1
  self.running = false
  self.run_done:signal()
  if not ok then error(page, 0) end
  s.ui.last_page = nil -- the page is sent; keep sessions small
  return page
end

local EXPIRED = "Your previous session has ended (it was idle for too long, or the server restarted), "
  .. "so a new one was started: widgets are back to their defaults."

--- The start of the HTML page, up to the page body: the head (styles and
-- scripts), the top bar and the notices.
-- @tparam {string,...} notices texts shown above the page
-- @treturn string the HTML
function Server:head_html(notices)
  local out = { string.format([[<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>%s</title><style>%s</style><script>%s</script></head><body>
<header class="cr-bar"><span class="cr-brand">%s</span><span class="cr-status" id="cr-status" role="status">
<span class="cr-spin"></span>Running...</span><noscript><button class="cr-apply" type="submit"
form="cr-form">Apply</button></noscript></header>
]], esc(self.title), assets.css, assets.head_js, esc(self.title)) }
  for _, text in ipairs(notices) do
    out[#out + 1] = '<div class="cr-notice" role="status">' .. esc(text) .. "</div>\n"
  end
  return table.concat(out)
end

-- The parts of the page stream after the head: snapshots of the page while
-- the script runs, then the final page. Each part is a `.cr-stage` followed
-- by a `.cr-done` marker once it has arrived whole; the styles show only
-- the latest whole part, and `cr.drop()` removes the parts before it. A
-- part does not name the one it replaces, so a snapshot that never went
-- out (the writer dropped it for a newer one) leaves nothing behind.
local DONE = '<i class="cr-done"></i><script>cr.drop()</script>\n'

-- A snapshot of the page while the script runs: inert, replaced by the next.
local function stage_html(page, spinner)
  return string.format('<div class="cr-stage" inert>\n%s\n</div>%s', page:render("html", { spinner = spinner }),
    DONE)
end

local function final_html(page)
  return string.format('<form class="cr-stage cr-final" id="cr-form" method="post" action="/set">\n%s\n</form>%s'
    .. "<style>#cr-status{visibility:hidden}</style>\n<script>%s</script>\n</body></html>\n",
    page:render("html"), DONE, assets.page_js)
end

--- The body of `GET /`: a function that streams the page as the script runs.
-- It calls `send(text, now, snapshot)` for each part; `now` is true when
-- called from inside the C core's spinner hook, where nothing may yield;
-- `snapshot` is true for a part that replaces the earlier snapshots (a
-- snapshot of the page while the script runs, and the final page), so a
-- snapshot that has not been sent yet need not be.
-- @tparam table s a session of this server
-- @tparam {string,...} notices texts shown above the page
-- @treturn function `function(send)`, which runs the script
function Server:page_stream(s, notices)
  return function(send)
    s.busy = s.busy + 1
    -- whatever happens, the session is no longer busy or listened to
    -- (pcall rather than a `<close>` variable: this also runs on Lua 5.3)
    local ok, err = pcall(function()
      send(self:head_html(notices))
      s.ui.listener = function(event, page, spinner)
        send(stage_html(page, event == "spinner_start" and spinner or nil), true, true)
      end
      local page = self:run(s)
      send(final_html(page), false, true)
    end)
    s.busy = s.busy - 1
    s.ui.listener = nil
    if not ok then error(err, 0) end
  end
end

-- Sets one widget from its posted text; nil, message on error.
local function apply(s, id, text)
  local w = s.ui:widget(id)
  if not w then return nil, "unknown widget '" .. id .. "'" end
  local value, err = M.convert(w.kind, w.params, text)
  if value == nil then return nil, err end
  local ok, msg = pcall(s.ui.set, s.ui, id, value)
  if not ok then return nil, tostring(msg) end
  return true
end

local function cookie(id)
  return "cr_session=" .. id .. "; Path=/; HttpOnly; SameSite=Strict"
end

--- Answers one parsed request.
-- @tparam table req `method`, `path` (without the query), `version`,
-- `headers` (lower-case names) and `body`
-- @treturn integer the status code
-- @treturn string|function the body, or a function that streams it (see
-- `page_stream`)
-- @treturn ?table the response headers
function Server:handle(req)
  local now = cqueues.monotime()
  if req.path == "/" then
    if req.method ~= "GET" then return 405, "use GET for /\n" end
    local s, had_cookie = self:session_for(req)
    local headers = { ["Content-Type"] = "text/html; charset=utf-8", ["Cache-Control"] = "no-store",
      ["X-Content-Type-Options"] = "nosniff" }
    local notices = {}
    if not s then
      if had_cookie then notices[#notices + 1] = EXPIRED end
      s = self:new_session(now)
      headers["Set-Cookie"] = cookie(s.id)
    end
    self:touch(s, now)
    if s.flash then notices[#notices + 1] = s.flash; s.flash = nil end
    return 200, self:page_stream(s, notices), headers
  elseif req.path == "/set" then
    if req.method ~= "POST" then return 405, "use POST for /set\n" end
    local form = M.parse_form(req.body)
    if not form then return 400, "malformed form body\n" end
    local s, had_cookie = self:session_for(req)
    if form.id ~= nil then -- one widget, from the page's script
      if not s then
        if had_cookie then return 410, "this session has ended; reload the page for a new one\n" end
        return 400, "no session: load / first\n"
      end
      self:touch(s, now)
      if not form.value then return 400, "expected id=...&value=...\n" end
      local ok, err = apply(s, form.id, form.value)
      if not ok then return 400, err .. "\n" end
      return 204, ""
    end
    -- the whole form, from a browser without JavaScript: every widget's value
    if s then
      self:touch(s, now)
      local problems = {}
      for id, text in pairs(form) do
        if s.ui:widget(id) then
          local ok, err = apply(s, id, text)
          if not ok then problems[#problems + 1] = err end
        end
      end
      table.sort(problems)
      if #problems > 0 then s.flash = "Not applied: " .. table.concat(problems, "; ") end
    end
    return 303, "", { Location = "/" }
  elseif req.path == "/stats" then
    if req.method ~= "GET" then return 405, "use GET for /stats\n" end
    return 200, ui.to_json(cr.stats()) .. "\n", { ["Content-Type"] = "application/json" }
  elseif req.path == "/metrics" then
    if req.method ~= "GET" then return 405, "use GET for /metrics\n" end
    return 200, metrics.render(cr.stats(), { sessions = self.count, requests = self.requests }),
      { ["Content-Type"] = metrics.CONTENT_TYPE }
  elseif req.path == "/healthz" then
    return 200, "ok\n"
  end
  return 404, "not found\n"
end

--- Reads one request from a connection, answers it and closes the
-- connection (one request per connection).
-- @param conn a `cqueues.socket`
function Server:serve_connection(conn)
  conn:setmode("b", "b") -- text mode would turn every \n we write into \r\n
  conn:settimeout(self.timeout)
  conn:setmaxline(8192)
  local req, code, msg = http.read_request(conn, self.max_body)
  local body, headers
  if not req and not code then
    -- Nothing to answer: a browser opens connections ahead of need and
    -- may send its next request on one just as the timeout closes it. An
    -- answer written then would be taken for that request's response (a
    -- form post lost behind a 400); a bare close makes the browser retry
    -- on a new connection.
    conn:close()
    return
  end
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
  headers = headers or { ["Content-Type"] = "text/plain; charset=utf-8" }
  headers.Connection = "close"
  if type(body) == "function" then
    local chunked = req.version == "1.1"
    if chunked then headers["Transfer-Encoding"] = "chunked" end
    local w = http.stream_writer(conn, chunked, self.timeout)
    conn:write(table.concat(http.head_lines(code, headers), "\r\n"), "\r\n\r\n")
    local ok, err = pcall(body, w.put)
    if not ok then
      self.log("cache_resource.server: " .. tostring(err))
      w.put('<div class="cr-alert cr-error">The server failed while running the script; see its log.</div>')
    end
    w.finish()
  else
    headers["Content-Length"] = tostring(#body)
    conn:write(table.concat(http.head_lines(code, headers), "\r\n"), "\r\n\r\n", body)
    conn:flush()
  end
  self.requests[code] = (self.requests[code] or 0) + 1
  self.log(string.format("%s %s -> %d", req and req.method or "-", req and req.path or "-", code))
  conn:close()
end

--- Listens, and adds the accept loop and the idle reaper to the controller.
-- Raises when it cannot listen.
-- @param cq a cqueues controller, whose loop serves the requests
-- @treturn Server the server
function Server:start(cq)
  self.listener = assert(socket.listen(self.host, self.port))
  local listened, ok, err = pcall(self.listener.listen, self.listener)
  if not listened then ok, err = false, ok end
  if not ok then error(string.format("cache_resource.server: cannot listen on %s:%s: %s", self.host, self.port,
    type(err) == "number" and errno.strerror(err) or tostring(err)), 2) end
  local _, host, port = self.listener:localname()
  self.bound_port = port
  self.url = string.format(host:find(":", 1, true) and "http://[%s]:%d/" or "http://%s:%d/", host, port)
  self.log(string.format("cache_resource: serving %s on %s",
    type(self.script) == "string" and self.script or "the app function", self.url))
  local readable = { pollfd = self.listener:pollfd(), events = "r" }
  self.listener:onerror(function(_, _, why) return why end) -- accept returns its errno rather than raise
  cq:wrap(function()
    -- When accepting fails (out of file descriptors: EMFILE, ENFILE), the
    -- connection stays queued and the listener readable: polling it again
    -- at once would spin. So the loop waits, longer after each failure up
    -- to a second, and logs once per episode.
    local backoff, failing = 0, nil -- seconds to wait before trying again; the errno being waited out
    while not self.stopped do
      if backoff > 0 then cqueues.poll(self.wake, backoff) else cqueues.poll(readable, self.wake) end
      if self.stopped then break end
      local conn, why = self.listener:accept(0)
      if conn then
        if failing then self.log("cache_resource.server: accepting connections again") end
        backoff, failing = 0, nil
        cq:wrap(function()
          local served, failure = pcall(self.serve_connection, self, conn)
          if not served then
            self.log("cache_resource.server: connection failed: " .. tostring(failure))
            pcall(conn.close, conn)
          end
        end)
      elseif why ~= nil and why ~= errno.EAGAIN and why ~= errno.ETIMEDOUT then
        if failing ~= why then
          self.log("cache_resource.server: accept failed: "
            .. (type(why) == "number" and errno.strerror(why) or tostring(why))
            .. "; trying again, less often, until it succeeds")
          failing = why
        end
        backoff = math.min(1, math.max(0.05, backoff * 2))
      end
    end
    self.listener:close()
  end)
  cq:wrap(function()
    while not self.stopped do
      cqueues.poll(self.wake, math.min(5, math.max(0.05, self.idle / 4)))
      if self.stopped then break end
      local n = self:reap(cqueues.monotime())
      if n > 0 then self.log(string.format("cache_resource: ended %d idle session(s)", n)) end
      if self.ended_over_cap > 0 then
        self.log(string.format("cache_resource: ended %d least recently used session(s) over max_sessions = %d",
          self.ended_over_cap, self.max_sessions))
        self.ended_over_cap = 0
      end
    end
  end)
  return self
end

--- Stops serving: the listener closes, every session ends (releasing its
-- session-scoped entries), and the controller's loop returns once the
-- requests in progress are answered.
function Server:stop()
  if self.stopped then return end
  self.stopped = true
  self.wake:signal()
  while self.oldest do self:end_session(self.oldest) end
end

--- Module functions.
-- @section end

-- Turns the warnings of warn() on or off for the whole process. Lua 5.4
-- starts with them off; Lua 5.3 has no warn(), and the C module writes its
-- warnings to stderr unless a global warn() takes them, so there "off"
-- installs one that drops them (and "on" removes it again).
local drop_warning = function() end
local function set_warnings(on)
  local warn = rawget(_G, "warn")
  if warn ~= nil and warn ~= drop_warning then
    warn(on and "@on" or "@off")
  else
    rawset(_G, "warn", (not on) and drop_warning or nil)
  end
end

--- Serves until `Server:stop` or SIGINT/SIGTERM, in a new cqueues
-- controller, with `cache_resource.cqueues` as the scheduler. Warnings
-- (`warn()`: a failing background refresh or `on_release`, a store that
-- fails) are turned on, one line each on stderr naming the cached
-- function, unless `warnings = false`.
-- @tparam table opts the options of `new`, and:
--
-- * `warnings` (boolean, default true): whether warnings are shown
-- * `ready` (function): called with the server once it listens (its `url`
--   and `bound_port` are set), before the first request is served
-- @treturn Server the server, stopped
function M.serve(opts)
  local signal = require "cqueues.signal"
  local cq = cqueues.new()
  local srv = M.new(opts)
  set_warnings(opts.warnings ~= false)
  -- A scheduler for cached functions that wait or refresh in the background
  -- goes here, before the first request: require "cache_resource.cqueues".
  require("cache_resource.cqueues").install()
  srv:start(cq)
  signal.block(signal.SIGINT, signal.SIGTERM)
  local signals = signal.listen(signal.SIGINT, signal.SIGTERM)
  -- an error in ready stops the server before it has served anything
  local ready, failure = true, nil
  if opts.ready then ready, failure = pcall(opts.ready, srv) end
  if ready then
    cq:wrap(function()
      cqueues.poll(signals, srv.wake)
      if not srv.stopped then
        srv.log("cache_resource: stopping (signal " .. tostring(signals:wait(0)) .. ")")
        srv:stop()
      end
    end)
  else
    srv:stop()
  end
  local ok, err = cq:loop()
  signal.unblock(signal.SIGINT, signal.SIGTERM)
  if not ready then error(failure, 0) end
  if not ok then error(err, 0) end
  return srv
end

return M
