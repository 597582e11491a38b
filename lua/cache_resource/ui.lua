--- cache_resource.ui: a small Streamlit-like page model (SPEC §7).
--
-- A session runs a script top to bottom; every `ui.*` call appends an
-- element to that run's page. Elements and widgets are replayable UI calls
-- (cache_resource.replayable), so a cached function that shows something
-- shows it again on every cache hit. It is also the reference for wiring
-- another UI to the C core: replayable(), widget_used(), set_widget_source()
-- and set_spinner() are all it uses.
local cr = require "cache_resource"

local ui = {}

local current = nil          -- the run in progress: session, page, target, token
local runs_started = 0
local sessions_made = 0
local widget_defaults = {}   -- widget id -> default, so a new session keys like the first

local ELEMENTS = { "title", "header", "subheader", "text", "markdown", "caption", "success",
  "info", "warning", "error" }
local WIDGETS = { "checkbox", "toggle", "slider", "text_input", "number_input", "selectbox",
  "radio", "button", "file_uploader", "camera_input" }

-- ---------------------------------------------------------------- values

local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    local named = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
    return named[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

-- JSON with sorted keys, so the same table always renders the same text.
local function to_json(v, seen)
  local t = type(v)
  if v == nil then return "null"
  elseif t == "boolean" then return tostring(v)
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    return math.type(v) == "integer" and tostring(v) or string.format("%.14g", v)
  elseif t == "string" then return json_string(v)
  elseif t == "table" then
    seen = seen or {}
    if seen[v] then return '"<cycle>"' end
    seen[v] = true
    local n, count = #v, 0
    for _ in pairs(v) do count = count + 1 end
    local parts = {}
    if count == n and n > 0 then
      for i = 1, n do parts[i] = to_json(v[i], seen) end
      seen[v] = nil
      return "[" .. table.concat(parts, ", ") .. "]"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for i, k in ipairs(keys) do parts[i] = json_string(tostring(k)) .. ": " .. to_json(v[k], seen) end
    seen[v] = nil
    return "{" .. table.concat(parts, ", ") .. "}"
  end
  return json_string(tostring(v))
end

local function to_text(v)
  if type(v) == "string" then return v end
  if type(v) == "table" and not getmetatable(v) then return to_json(v) end
  return tostring(v)
end

ui.to_json = to_json

-- ------------------------------------------------------------------ runs

local function running(what)
  if current == nil then
    error("cache_resource.ui." .. what .. ": no script is running; call it from a script given to session:run()", 3)
  end
  return current
end

local function append(el)
  local run = running(el.kind)
  local target = run.target
  target[#target + 1] = el
  return el
end

-- The functions that do the work; ui.* and block methods wrap them as replayables.
local raw = {}

for _, kind in ipairs(ELEMENTS) do
  raw[kind] = function(body) append { kind = kind, body = to_text(body) } end
end

function raw.write(...)
  local parts = table.pack(...)
  for i = 1, parts.n do parts[i] = to_text(parts[i]) end
  append { kind = "write", body = table.concat(parts, " ", 1, parts.n) }
end

function raw.code(body, language)
  append { kind = "code", body = to_text(body), language = language }
end

function raw.exception(err)
  append { kind = "exception", body = to_text(err) }
end

function raw.json(value)
  append { kind = "json", body = to_json(value) }
end

function raw.divider()
  append { kind = "divider" }
end

local Block = {}
Block.__index = Block
Block.__name = "cache_resource.ui.block"

function raw.container()
  local run = running("container")
  local el = append { kind = "container", children = {} }
  return setmetatable({ children = el.children, token = run.token }, Block)
end

-- ---------------------------------------------------------------- widgets

local function check_range(kind, opts, v)
  if type(v) ~= "number" then return kind .. " needs a number" end
  if (opts.min and v < opts.min) or (opts.max and v > opts.max) then
    return string.format("%s value %s is outside [%s, %s]", kind, tostring(v), tostring(opts.min), tostring(opts.max))
  end
end

local function check_option(kind, opts, v)
  for _, o in ipairs(opts.options or {}) do
    if o == v then return nil end
  end
  return kind .. " value " .. tostring(v) .. " is not one of its options"
end

local WIDGET_KINDS = {
  checkbox = { default = false, check = function(_, _, v) if type(v) ~= "boolean" then return "checkbox needs true or false" end end },
  toggle = { default = false, check = function(_, _, v) if type(v) ~= "boolean" then return "toggle needs true or false" end end },
  slider = { default = function(o) return o.min or 0 end, check = check_range },
  number_input = { default = function(o) return o.min or 0 end, check = check_range },
  text_input = { default = "", check = function(_, _, v) if type(v) ~= "string" then return "text_input needs a string" end end },
  selectbox = { default = function(o) return (o.options or {})[1] end, check = check_option },
  radio = { default = function(o) return (o.options or {})[1] end, check = check_option },
  button = { default = false, one_shot = true, check = function(_, _, v) if type(v) ~= "boolean" then return "button needs true or false" end end },
  file_uploader = { default = nil, refused = true, check = function() end },
  camera_input = { default = nil, refused = true, check = function() end },
}

local function widget_id(kind, label, opts)
  return kind .. ":" .. tostring(opts.key or label)
end

local function cached_widget_warning(kind, label, fname)
  return string.format("CachedWidgetWarning: the %s '%s' is used inside the cached function %s, "
    .. "whose key does not include widget values: it is shown, but changing it will not recompute %s. "
    .. "Pass experimental_allow_widgets = true to cache_resource, or move the widget out of %s.",
    kind, label, fname, fname, fname)
end

local function make_widget(kind)
  local spec = WIDGET_KINDS[kind]
  return function(label, opts)
    if type(label) ~= "string" then
      error("cache_resource.ui." .. kind .. ": the label must be a string, got " .. type(label), 2)
    end
    opts = opts or {}
    local run = running(kind)
    local fname = cr.computing()
    if spec.refused and fname then
      error(string.format("cache_resource.ui.%s cannot be used inside the cached function %s: its value "
        .. "(an uploaded file) cannot be part of a cache key. Call %s outside %s and pass what you need "
        .. "as an argument.", kind, fname, kind, fname), 2)
    end
    local id = widget_id(kind, label, opts)
    local default = opts.value
    if default == nil then
      default = type(spec.default) == "function" and spec.default(opts) or spec.default
    end
    widget_defaults[id] = default
    local state = run.session.widgets
    local value = state[id]
    if value == nil then
      value = default
      if not spec.one_shot then state[id] = value end
    end
    if spec.one_shot and value then run.pressed[#run.pressed + 1] = id end
    if fname and cr.widget_used(id, value) then
      ui.exception(cached_widget_warning(kind, label, fname))
    end
    append { kind = kind, label = label, id = id, key = opts.key, value = value,
      options = opts.options, min = opts.min, max = opts.max, step = opts.step }
    run.session.known[id] = { kind = kind, label = label, key = opts.key, opts = opts }
    return value
  end
end

for _, kind in ipairs(WIDGETS) do raw[kind] = make_widget(kind) end

-- ----------------------------------------------------- replayable surface

local function replay_closure_error(fname)
  return string.format("CacheReplayClosureError: while replaying the cached function %s, an element was "
    .. "written into a container created outside %s. The container belongs to an earlier run, so the "
    .. "element cannot be replayed into it. Fix it in one of three ways: create the container inside %s; "
    .. "or move the call that writes into the container out of %s; or stop caching %s.",
    fname, fname, fname, fname, fname)
end

-- Runs raw[kind] with the block as the target of new elements.
local function in_block(block, kind, ...)
  local run = running(kind)
  if getmetatable(block) ~= Block then
    error("cache_resource.ui: container methods are called as block:" .. kind .. "(...)", 3)
  end
  if block.token ~= run.token then
    local fname = cr.replaying()
    if fname then error(replay_closure_error(fname), 0) end
    error("cache_resource.ui: this container belongs to an earlier run of the script; create "
      .. "containers in the run that writes into them", 3)
  end
  local saved = run.target
  run.target = block.children
  local res = table.pack(pcall(raw[kind], ...))
  run.target = saved
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

local ALL = { "write", "code", "exception", "json", "divider", "container" }
for _, k in ipairs(ELEMENTS) do ALL[#ALL + 1] = k end
for _, k in ipairs(WIDGETS) do ALL[#ALL + 1] = k end

for _, kind in ipairs(ALL) do
  ui[kind] = cr.replayable(raw[kind], kind)
  Block[kind] = cr.replayable(function(block, ...) return in_block(block, kind, ...) end, "container." .. kind)
end

-- ------------------------------------------------------------- rendering

local Page = {}
Page.__index = Page
Page.__name = "cache_resource.ui.page"

local TEXT_PREFIX = { title = "# ", header = "## ", subheader = "### ", success = "[ok] ",
  info = "[info] ", warning = "[warning] ", error = "[error] ", exception = "[exception] ",
  caption = "  " }

local function render_text(elements, indent, out)
  for _, el in ipairs(elements) do
    local k = el.kind
    local line
    if k == "divider" then line = "----------------------------------------"
    elseif k == "container" then
      render_text(el.children, indent .. "  ", out)
    elseif k == "code" then line = "```" .. (el.language or "") .. "\n" .. el.body .. "\n```"
    elseif k == "checkbox" or k == "toggle" then line = (el.value and "[x] " or "[ ] ") .. el.label
    elseif k == "button" then line = "[ " .. el.label .. " ]"
    elseif WIDGET_KINDS[k] then
      line = el.label .. ": " .. (el.value == nil and "(none)" or to_text(el.value))
      if el.options then line = line .. "  (" .. table.concat(el.options, " | ") .. ")" end
    else line = (TEXT_PREFIX[k] or "") .. (el.body or "") end
    if line then out[#out + 1] = indent .. line:gsub("\n", "\n" .. indent) end
  end
  return out
end

local function esc(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }))
end

local HTML_TAG = { title = "h1", header = "h2", subheader = "h3", text = "pre", markdown = "p",
  write = "p", caption = "small", json = "pre" }

local function render_html(elements, out)
  for _, el in ipairs(elements) do
    local k, id = el.kind, el.id and esc(el.id)
    local label = el.label and esc(el.label)
    if HTML_TAG[k] then
      out[#out + 1] = string.format('<%s class="cr-%s">%s</%s>', HTML_TAG[k], k, esc(el.body), HTML_TAG[k])
    elseif k == "success" or k == "info" or k == "warning" or k == "error" or k == "exception" then
      out[#out + 1] = string.format('<div class="cr-alert cr-%s">%s</div>', k, esc(el.body))
    elseif k == "code" then
      out[#out + 1] = string.format('<pre class="cr-code"><code>%s</code></pre>', esc(el.body))
    elseif k == "divider" then out[#out + 1] = "<hr>"
    elseif k == "container" then
      out[#out + 1] = '<div class="cr-container">'
      render_html(el.children, out)
      out[#out + 1] = "</div>"
    elseif k == "checkbox" or k == "toggle" then
      out[#out + 1] = string.format('<label class="cr-%s"><input type="checkbox" name="%s" data-widget="%s"%s> %s</label>',
        k, id, k, el.value and " checked" or "", label)
    elseif k == "slider" or k == "number_input" then
      out[#out + 1] = string.format('<label class="cr-%s">%s <input type="%s" name="%s" data-widget="%s" value="%s"%s%s%s>%s</label>',
        k, label, k == "slider" and "range" or "number", id, k, esc(el.value),
        el.min and (' min="' .. esc(el.min) .. '"') or "", el.max and (' max="' .. esc(el.max) .. '"') or "",
        el.step and (' step="' .. esc(el.step) .. '"') or "",
        k == "slider" and (' <output class="cr-value">' .. esc(el.value) .. "</output>") or "")
    elseif k == "text_input" then
      out[#out + 1] = string.format('<label class="cr-text_input">%s <input type="text" name="%s" data-widget="text_input" value="%s"></label>',
        label, id, esc(el.value))
    elseif k == "selectbox" or k == "radio" then
      local opts = {}
      for _, o in ipairs(el.options or {}) do
        local sel = (o == el.value)
        if k == "selectbox" then
          opts[#opts + 1] = string.format('<option value="%s"%s>%s</option>', esc(o), sel and " selected" or "", esc(o))
        else
          opts[#opts + 1] = string.format('<label><input type="radio" name="%s" data-widget="radio" value="%s"%s> %s</label>',
            id, esc(o), sel and " checked" or "", esc(o))
        end
      end
      if k == "selectbox" then
        out[#out + 1] = string.format('<label class="cr-selectbox">%s <select name="%s" data-widget="selectbox">%s</select></label>',
          label, id, table.concat(opts))
      else
        out[#out + 1] = string.format('<fieldset class="cr-radio"><legend>%s</legend>%s</fieldset>', label, table.concat(opts))
      end
    elseif k == "button" then
      out[#out + 1] = string.format('<button class="cr-button" name="%s" data-widget="button" value="true">%s</button>', id, label)
    elseif k == "file_uploader" or k == "camera_input" then
      out[#out + 1] = string.format('<label class="cr-%s">%s <input type="file" name="%s" disabled></label>', k, label, id)
    end
  end
  return out
end

--- page:render("text" | "html")
function Page:render(format)
  format = format or "text"
  if format == "text" then return table.concat(render_text(self, "", {}), "\n") end
  if format == "html" then
    return '<div class="cr-page">\n' .. table.concat(render_html(self, {}), "\n") .. "\n</div>"
  end
  error("cache_resource.ui: page:render takes \"text\" or \"html\", got " .. tostring(format), 2)
end

--- Every element of the page in order, containers flattened (for tests and tools).
function Page:flat()
  local out = {}
  local function walk(list)
    for _, el in ipairs(list) do
      out[#out + 1] = el
      if el.children then walk(el.children) end
    end
  end
  walk(self)
  return out
end

-- --------------------------------------------------------------- sessions

local Session = {}
Session.__index = Session
Session.__name = "cache_resource.ui.session"

--- ui.session([id]): a user session; the id names it for scope = "session".
function ui.session(id)
  if id == nil then
    sessions_made = sessions_made + 1
    id = "session-" .. sessions_made
  end
  return setmetatable({ id = tostring(id), widgets = {}, known = {}, last_page = nil, closed = false }, Session)
end

--- session:run(script, ...): runs a function (or a Lua file, loaded anew each
-- run like a re-run) and returns its page. An error in the script becomes an
-- exception element; the session stays usable.
function Session:run(script, ...)
  if self.closed then error("cache_resource.ui: session '" .. self.id .. "' is closed", 2) end
  local fn, load_err = script, nil
  if type(script) == "string" then fn, load_err = loadfile(script) end
  if type(fn) ~= "function" and not (type(fn) == "table" and getmetatable(fn) and getmetatable(fn).__call) then
    if load_err == nil then error("cache_resource.ui: session:run takes a function or a file path", 2) end
  end
  runs_started = runs_started + 1
  local page = setmetatable({ spinners = {} }, Page)
  local run = { session = self, page = page, target = page, token = runs_started, pressed = {} }
  local saved, saved_session = current, cr.session()
  current = run
  cr.set_session(self.id)
  local ok, err
  if load_err then
    ok, err = false, load_err
  else
    ok, err = xpcall(fn, function(e) return { message = e, trace = debug.traceback(e, 2) } end, ...)
  end
  if not ok then
    run.target = page
    local message = type(err) == "table" and err.message or err
    append { kind = "exception", body = to_text(message), trace = type(err) == "table" and err.trace or nil }
  end
  current = saved
  cr.set_session(saved_session)
  for _, id in ipairs(run.pressed) do self.widgets[id] = false end
  page.transient = nil
  self.last_page = page
  return page
end

--- session:set(label_or_key, value): a user interaction, seen by the next run.
-- A widget id ("checkbox:Show raw data", what HTML forms post) works too.
function Session:set(name, value)
  local found = self.known[name] and name
  for id, w in pairs(self.known) do
    if w.key == name then found = found or id end
  end
  if not found then
    for id, w in pairs(self.known) do
      if w.label == name and w.key == nil then
        if found then error("cache_resource.ui: several widgets are labelled '" .. tostring(name) .. "'; give them a key", 2) end
        found = id
      end
    end
  end
  if not found then error("cache_resource.ui: no widget with the label or key '" .. tostring(name) .. "' has been shown in this session", 2) end
  local w = self.known[found]
  local problem = WIDGET_KINDS[w.kind].check(w.kind, w.opts, value)
  if problem then error("cache_resource.ui: " .. problem, 2) end
  self.widgets[found] = value
  return found
end

--- session:value(label_or_key): the widget's current value in this session.
function Session:value(name)
  for id, w in pairs(self.known) do
    if w.key == name or w.label == name then return self.widgets[id] end
  end
end

--- session:close(): ends the session; its session-scoped entries are released.
function Session:close()
  if not self.closed then
    self.closed = true
    cr.end_session(self.id)
  end
end

--- The page of the run in progress, or nil (a spinner can be seen there).
function ui.page()
  return current and current.page
end

ui.Page, ui.Session, ui.Block = Page, Session, Block

-- ------------------------------------------------------------- C hooks

cr.set_widget_source(function(id)
  local v = current and current.session.widgets[id]
  if v == nil then v = widget_defaults[id] end
  return v
end)

local clock = os.clock
cr.set_spinner(function(event, text, show_time)
  local page = current and current.page
  if not page then return end
  if event == "start" then
    page.transient = { kind = "spinner", body = text, show_time = show_time, started = clock() }
    page.spinners[#page.spinners + 1] = text
  elseif page.transient then
    local sp = page.transient
    if sp.show_time then
      page.spinners[#page.spinners] = string.format("%s (%.2f s)", sp.body, clock() - sp.started)
    end
    page.transient = nil
  end
end)

return ui
