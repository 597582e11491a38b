--- Sessions, and runs of their script. (Part of `cache_resource.ui`.)
-- @module cache_resource.ui
local cr = require "cache_resource"
local fmt = require "cache_resource.ui.format"
local model = require "cache_resource.ui.model"
local Page = require "cache_resource.ui.page"
local widgets = require "cache_resource.ui.widgets"

fmt.internal_file()
local safe_text, show, is_callable, finally = fmt.safe_text, fmt.show, fmt.is_callable, fmt.finally
local add = model.add

local M = {}

local runs_started = 0
local sessions_made = 0

-- Wall-clock seconds for spinner times: a monotonic clock when one is around.
local clock = os.clock
do
  local ok, cqueues = pcall(require, "cqueues")
  if ok and type(cqueues) == "table" and cqueues.monotime then
    clock = cqueues.monotime
  else
    local has_socket, socket = pcall(require, "socket")
    if has_socket and type(socket) == "table" and socket.gettime then clock = socket.gettime end
  end
end

local Session = {}
Session.__index = Session
Session.__name = "cache_resource.ui.session"

-- The C core asks for widget values (experimental_allow_widgets keys) and
-- reports spinners through these hooks; a session installs them when it
-- runs a script.
local function widget_source(id)
  local current = model.current()
  local v = current and current.session.widgets[id]
  if v == nil then v = widgets.default(id) end
  return v
end

local function notify(run, event, spinner)
  local listener = run.session.listener
  if listener then listener(event, run.page, spinner) end
end

local function spinner_hook(event, text, show_time)
  local run = model.current()
  if not run or coroutine.running() ~= run.co then return end -- a background refresh shows nothing
  local page = run.page
  if event == "start" then
    local sp = { kind = "spinner", body = text, show_time = show_time, started = clock(), list = run.target.children }
    page.transient = sp
    page.spinners[#page.spinners + 1] = text
    notify(run, "spinner_start", sp)
  elseif page.transient then
    local sp = page.transient
    page.transient = nil
    sp.elapsed = clock() - sp.started
    if sp.show_time then page.spinners[#page.spinners] = string.format("%s (%.2f s)", sp.body, sp.elapsed) end
    notify(run, "spinner_stop", sp)
  end
end

local function install_hooks()
  cr.set_widget_source(widget_source)
  cr.set_spinner(spinner_hook)
end

--- Sessions.
-- A session is one user: it runs the app script again and again (as
-- Streamlit re-runs it on every interaction) and keeps its widget values
-- between runs.
-- @section sessions

--- A new user session.
-- Closes itself when it goes out of scope as a `<close>` variable (Lua 5.4).
-- @tparam[opt] string id its name, for cached functions with
-- `scope = "session"` (default: a new name)
-- @treturn Session the session
function M.session(id)
  if id == nil then
    sessions_made = sessions_made + 1
    id = "session-" .. sessions_made
  end
  install_hooks()
  return setmetatable({ id = tostring(id), widgets = {}, known = {}, last_page = nil, closed = false,
    listener = nil }, Session)
end

--- The page of the run in progress (a spinner can be seen there).
-- @treturn ?Page the page, or `nil` outside of a run
function M.page()
  local current = model.current()
  return current and current.page
end

local function on_error(e)
  local message = safe_text(e)
  return { message = message, trace = debug.traceback(message, 2) }
end

--- A user session (`ui.Session`), from `ui.session`.
-- @type Session

--- Its name (what cached functions with `scope = "session"` see).
-- @tfield string id

--- Its widget values: widget id -> value.
-- @tfield table widgets

--- The page of its last run, or `nil`.
-- @tfield ?Page last_page

--- Whether `close` has ended it.
-- @tfield boolean closed

--- A function the caller may set: while the script runs, it is called as
-- `listener(event, page, spinner)` for `"spinner_start"` and
-- `"spinner_stop"` (a server streams the page with it). It must not yield.
-- @tfield ?function listener

--- Runs the script once, as a re-run would, and returns its page. While it
-- runs, every function of this module adds to that page, and widgets read this
-- session's values. An error in the script becomes an exception element
-- (with its traceback); the session stays usable.
-- @tparam function|string script a function, or the path of a Lua file
-- (loaded anew each run)
-- @param ... arguments for the script
-- @treturn Page the page
function Session:run(script, ...)
  if self.closed then error("cache_resource.ui: session '" .. self.id .. "' is closed", 2) end
  local fn, load_err = script, nil
  if type(script) == "string" then
    fn, load_err = loadfile(script)
  elseif not is_callable(script) then
    error("cache_resource.ui: session:run takes a function or a file path, got " .. show(script), 2)
  end
  install_hooks()
  runs_started = runs_started + 1
  local page = setmetatable({ spinners = {}, sidebar = {} }, Page)
  local run = { session = self, page = page, token = runs_started, pressed = {}, ids = {}, stack = {},
    co = coroutine.running() }
  run.main = model.root_block(run, page)
  run.side = model.root_block(run, page.sidebar)
  run.target = run.main
  local saved, saved_session = model.current(), cr.session()
  -- Whatever happens below, the previous run and session come back.
  finally(function()
    model.set_current(saved)
    cr.set_session(saved_session)
    page.transient = nil
  end, function(...)
    model.set_current(run)
    cr.set_session(self.id)
    local ok, err
    if load_err then
      ok, err = false, { message = load_err }
    else
      ok, err = xpcall(fn, on_error, ...)
    end
    if not ok then
      if type(err) ~= "table" then err = { message = safe_text(err) } end
      add(run.main, { kind = "exception", body = err.message, trace = err.trace })
    end
  end, ...)
  for _, id in ipairs(run.pressed) do self.widgets[id] = false end
  self.last_page = page
  return page
end

-- The widget id a label, key or id names in this session.
local function find_widget(self, name)
  if self.known[name] then return name end
  local found
  for id, w in pairs(self.known) do
    if w.key ~= nil and w.key == name then
      if found then error("cache_resource.ui: several widgets have the key '" .. safe_text(name) .. "'", 3) end
      found = id
    end
  end
  if found then return found end
  for id, w in pairs(self.known) do
    if w.label == name and w.key == nil then
      if found then
        error("cache_resource.ui: several widgets are labelled '" .. safe_text(name) .. "'; give them a key", 3)
      end
      found = id
    end
  end
  return found
end

--- A user interaction: sets a widget's value, seen by the next run. The
-- value is checked like a browser's: type, range, step, options.
-- @tparam string|integer name the widget's label, key or id (such as
-- `"checkbox:Show raw data"`, what HTML forms post), of a widget this
-- session has shown
-- @param value its new value (for `selectbox` and `radio`: the option
-- itself)
-- @treturn string the widget's id
function Session:set(name, value)
  local id = find_widget(self, name)
  if not id then
    error("cache_resource.ui: no widget with the label or key '" .. safe_text(name)
      .. "' has been shown in this session", 2)
  end
  local w = self.known[id]
  local v, problem = widgets.check(w.kind, w.params, value)
  if v == nil then error(string.format("cache_resource.ui: %s '%s': %s", w.kind, w.label, problem), 2) end
  self.widgets[id] = v
  return id
end

--- A widget's current value in this session.
-- @tparam string|integer name the widget's label, key or id
-- @return its value, or `nil` when no such widget has been shown
function Session:value(name)
  local id = find_widget(self, name)
  return id and self.widgets[id]
end

--- What the session knows of a widget.
-- @tparam string id the widget's id
-- @treturn ?table `{ kind, label, key, params }` (`params`: its parameters
-- with their defaults filled in), or `nil` when the session has not shown it
function Session:widget(id)
  return self.known[id]
end

--- Ends the session: its session-scoped cache entries are released. Closing
-- it again does nothing.
function Session:close()
  if not self.closed then
    self.closed = true
    cr.end_session(self.id)
  end
end
Session.__close = Session.close

--- The end of the class.
-- @section end

M.Session = Session

return M
