--- cache_resource.ui: a small Streamlit-like page model.
--
-- A session runs a script top to bottom; every `ui.*` call appends an
-- element to the block that is active in that run (the main area, the
-- sidebar, a container, a column...). Elements, widgets and layout blocks are
-- replayable UI calls (`cache_resource.replayable`), so a cached function that
-- shows something shows it again on every cache hit. It is also the
-- reference for wiring another UI to the C core: `replayable`, `computing`,
-- `replaying`, `widget_used`, `set_widget_source` and `set_spinner` are all
-- it uses.
--
--     local ui = require "cache_resource.ui"
--     local session = ui.session()
--     local page = session:run(function()
--       ui.title("Hello")
--       if ui.checkbox("Show details") then ui.write({ answer = 42 }) end
--     end)
--     print(page:render("text"))
local cr = require "cache_resource"
local json = require "dkjson"

local ui = {}

local current = nil          -- the run in progress (see Session:run)
local runs_started = 0
local sessions_made = 0
local widget_defaults = {}   -- widget id -> default, so a new session keys like the first

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

local ELEMENTS = { "title", "header", "subheader", "text", "markdown", "caption", "success",
  "info", "warning", "error" }
local WIDGETS = { "checkbox", "toggle", "slider", "text_input", "number_input", "selectbox",
  "radio", "button", "file_uploader", "camera_input" }

-- ------------------------------------------------------------ messages

local THIS_FILE = debug.getinfo(1, "S").source

-- "file:line: " of the user code that called into this module, for errors
-- raised below C frames (replayables) where error()'s level cannot tell.
local function where()
  for level = 3, 40 do
    local info = debug.getinfo(level, "Sl")
    if not info then break end
    if info.source ~= THIS_FILE and info.currentline and info.currentline > 0 then
      return info.short_src .. ":" .. info.currentline .. ": "
    end
  end
  return ""
end

local function fail(what, message)
  error(where() .. "cache_resource.ui." .. what .. ": " .. message, 0)
end

-- tostring that never raises: an object whose __tostring fails still gets a text.
local function safe_text(v)
  if type(v) == "string" then return v end
  local ok, s = pcall(tostring, v)
  if ok and type(s) == "string" then return s end
  return string.format("(a %s whose __tostring failed: %s)", type(v), ok and "it returned no string" or safe_text(s))
end

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) == "table" or type(v) == "function" or type(v) == "userdata" or type(v) == "thread" then
    return "a " .. type(v)
  end
  return safe_text(v)
end

-- ---------------------------------------------------------------- JSON

local function key_before(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "number" or ta == "string" then return a < b end
  return safe_text(a) < safe_text(b)
end

-- A copy of v that dkjson writes deterministically: every object carries its
-- keys, sorted, as __jsonorder; keys become strings (so a table with a
-- numeric `n` is not taken for an array); values JSON cannot hold become
-- their text; a cycle becomes "<cycle>".
local function jsonable(v, seen)
  local t = type(v)
  if t == "nil" or t == "boolean" or t == "number" or t == "string" then return v end
  if t ~= "table" then return safe_text(v) end
  local mt = getmetatable(v)
  if mt ~= nil and (type(mt) ~= "table" or mt.__tostring) then return safe_text(v) end
  if seen[v] then return "<cycle>" end
  seen[v] = true
  local keys, n = {}, 0
  for k in pairs(v) do n = n + 1; keys[n] = k end
  local copy
  if n == 1 and keys[1] == "n" and type(v.n) == "number" then
    -- dkjson reads a lone numeric "n" as an array length
    local text = json.encode(v.n)
    copy = setmetatable({}, { __tojson = function() return '{"n":' .. text .. "}" end })
  elseif n > 0 and #v == n then
    copy = {}
    for i = 1, n do copy[i] = jsonable(v[i], seen) end
  else
    table.sort(keys, key_before)
    local order = {}
    copy = {}
    for i, k in ipairs(keys) do
      local name = type(k) == "string" and k or safe_text(k)
      order[i] = name
      copy[name] = jsonable(v[k], seen)
    end
    setmetatable(copy, { __jsonorder = order, __jsontype = "object" })
  end
  seen[v] = nil
  return copy
end

-- ui.to_json(value [, pretty]): JSON with sorted keys (lua-dkjson), so the
-- same table always gives the same text. (Documented with the elements.)
function ui.to_json(v, pretty)
  return json.encode(jsonable(v, {}), { indent = pretty and true or nil })
end

local function to_text(v)
  if type(v) == "string" then return v end
  if type(v) == "table" and getmetatable(v) == nil then return ui.to_json(v) end
  return safe_text(v)
end

-- ----------------------------------------------------------------- runs

local Block = {}
Block.__index = Block
Block.__name = "cache_resource.ui.block"

local Row = { __name = "cache_resource.ui.columns" }
Row.__index = Row

-- ui.sidebar: the sidebar of whatever run is in progress. (Documented with
-- the layout blocks.)
ui.sidebar = setmetatable({ sidebar = true }, Block)

local function running(what)
  if current == nil then
    error(where() .. "cache_resource.ui." .. what
      .. ": no script is running; call it from a script given to session:run()", 0)
  end
  return current
end

-- Adds an element to a block; an `empty` block holds one element at most.
local function add(block, el)
  local list = block.children
  if block.single then
    for i = #list, 1, -1 do list[i] = nil end
  end
  list[#list + 1] = el
  return el
end

local function append(el)
  return add(running(el.kind).target, el)
end

-- A new block of this run, for the element `el` (which holds its children).
local function new_block(run, el, single)
  return setmetatable({ children = el.children, token = run.token, replay_of = cr.replaying() or false,
    single = single or nil }, Block)
end

local function replay_closure_error(fname)
  return string.format("CacheReplayClosureError: while replaying the cached function %s, an element was "
    .. "written into a block (container, column, expander...) created outside %s. Calls replayed from the "
    .. "cache cannot refer to blocks that %s did not create, so the element cannot be replayed into it. "
    .. "Fix it in one of three ways: create the container inside %s; or move the call that writes into "
    .. "the container out of %s; or stop caching %s.", fname, fname, fname, fname, fname, fname)
end

-- The block `block` stands for in this run; raises when it cannot be written.
-- While a cached function replays, only blocks created by that same replay
-- are writable: a block from outside would be written twice (or into an
-- earlier run's page).
local function resolve(run, block, what)
  if rawequal(block, ui.sidebar) then return run.side end
  local mt = getmetatable(block)
  if mt ~= Block and mt ~= Row then
    fail(what, "expected a block (from ui.container(), ui.columns(), ui.expander(), ui.empty() or ui.sidebar), got "
      .. show(block))
  end
  local replaying = cr.replaying()
  if replaying then
    if block.token ~= run.token or block.replay_of ~= replaying then error(replay_closure_error(replaying), 0) end
  elseif block.token ~= run.token then
    fail(what, "this block belongs to an earlier run of the script; create blocks in the run that writes into them")
  end
  return block
end

-- Runs fn(...), then cleanup() whatever happens; an error goes on
-- unchanged. (Not a `<close>` variable: the module also runs on Lua 5.3.)
local function finally(cleanup, fn, ...)
  local res = table.pack(pcall(fn, ...))
  cleanup()
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

-- Runs fn(...) with `block` as the run's target, whatever happens.
local function with_target(run, block, fn, ...)
  local saved = run.target
  run.target = block
  return finally(function() run.target = saved end, fn, ...)
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
  append { kind = "code", body = to_text(body), language = language ~= nil and to_text(language) or nil }
end

function raw.exception(err)
  append { kind = "exception", body = to_text(err) }
end

function raw.json(value)
  append { kind = "json", body = ui.to_json(value, true) }
end

function raw.divider()
  append { kind = "divider" }
end

local function check_opts(what, opts, allowed)
  if opts == nil then return {} end
  if type(opts) ~= "table" then fail(what, "expected an options table, got " .. show(opts)) end
  for k in pairs(opts) do
    if not allowed[k] then fail(what, "unknown option '" .. safe_text(k) .. "'") end
  end
  return opts
end

function raw.container(opts)
  local run = running("container")
  opts = check_opts("container", opts, { border = true })
  if opts.border ~= nil and type(opts.border) ~= "boolean" then fail("container", "border must be a boolean") end
  local el = append { kind = "container", border = opts.border, children = {} }
  return new_block(run, el)
end

function raw.expander(label, expanded, opts)
  local run = running("expander")
  if type(expanded) == "table" and opts == nil then expanded, opts = nil, expanded end
  opts = check_opts("expander", opts, { expanded = true })
  if type(label) ~= "string" then fail("expander", "the label must be a string, got " .. show(label)) end
  if expanded == nil then expanded = opts.expanded end
  if expanded ~= nil and type(expanded) ~= "boolean" then fail("expander", "expanded must be a boolean") end
  local el = append { kind = "expander", label = label, expanded = expanded or false, children = {} }
  return new_block(run, el)
end

function raw.empty()
  local run = running("empty")
  local el = append { kind = "empty", children = {} }
  return new_block(run, el, true)
end

local GAPS = { small = true, medium = true, large = true }

-- The columns element and its blocks; ui.columns returns them one by one
-- through raw.column so that each is a recorded result a replay rebinds.
function raw.columns(spec, opts)
  local run = running("columns")
  opts = check_opts("columns", opts, { gap = true })
  local widths = {}
  if math.type(spec) == "integer" then
    if spec < 1 or spec > 64 then fail("columns", "the number of columns must be from 1 to 64, got " .. spec) end
    for i = 1, spec do widths[i] = 1 end
  elseif type(spec) == "table" and getmetatable(spec) == nil and #spec >= 1 then
    for i, w in ipairs(spec) do
      if type(w) ~= "number" or not (w > 0) or w == math.huge then -- luacheck: ignore 581 (NaN is not > 0)
        fail("columns", "column widths must be positive numbers, got " .. show(w) .. " at " .. i)
      end
      widths[i] = w
    end
  else
    fail("columns", "expected a number of columns or a list of widths, got " .. show(spec))
  end
  local gap = opts.gap or "small"
  if not GAPS[gap] then fail("columns", "gap must be \"small\", \"medium\" or \"large\", got " .. show(gap)) end
  local total = 0
  for _, w in ipairs(widths) do total = total + w end
  local el = append { kind = "columns", gap = gap, children = {} }
  local row = setmetatable({ token = run.token, replay_of = cr.replaying() or false, blocks = {} }, Row)
  for i, w in ipairs(widths) do
    local col = { kind = "column", width = w / total, children = {} }
    el.children[i] = col
    row.blocks[i] = new_block(run, col)
  end
  return row
end

function raw.column(row, i)
  local run = running("columns")
  resolve(run, row, "columns")
  return row.blocks[i]
end

-- The CachedWidgetWarning element, into `handle` (a block, or nil for the
-- active block) so that a replay puts it where the live call did.
function raw.widget_warning(handle, text)
  local run = running("widget")
  local block = handle == nil and run.target or resolve(run, handle, "widget")
  add(block, { kind = "exception", body = text })
end

-- ui.with: enter and leave are recorded like any UI call, so a cached
-- function that uses ui.with replays into the block it names.
function raw.enter(block)
  local run = running("with")
  local target = resolve(run, block, "with")
  run.stack[#run.stack + 1] = run.target
  run.target = target
end

function raw.leave()
  local run = current
  if run and #run.stack > 0 then
    run.target = run.stack[#run.stack]
    run.stack[#run.stack] = nil
  end
end

-- ---------------------------------------------------------------- widgets

-- Positional parameters (Streamlit's order) and the other options of each widget.
local WIDGET_SPEC = {
  checkbox = { params = { "value" } },
  toggle = { params = { "value" } },
  slider = { params = { "min_value", "max_value", "value", "step" } },
  number_input = { params = { "min_value", "max_value", "value", "step" }, extra = { "placeholder" } },
  text_input = { params = { "value" }, extra = { "placeholder", "max_chars", "type" } },
  selectbox = { params = { "options", "index" }, extra = { "placeholder", "format_func" } },
  radio = { params = { "options", "index" }, extra = { "horizontal", "format_func" } },
  button = { params = {}, extra = { "type", "use_container_width" }, one_shot = true },
  file_uploader = { params = {}, extra = { "type", "accept_multiple_files" }, refused = true },
  camera_input = { params = {}, refused = true },
}
local SIMILAR = { min = "min_value", max = "max_value", default = "value", label = "the first argument" }

for _, spec in pairs(WIDGET_SPEC) do
  spec.allowed = { key = true, help = true, disabled = true, label_visibility = true }
  for _, k in ipairs(spec.params) do spec.allowed[k] = true end
  for _, k in ipairs(spec.extra or {}) do spec.allowed[k] = true end
end

-- True when a trailing table argument is an opts table (it has a name key)
-- rather than a positional list (options).
local function is_opts(t, param)
  if type(t) ~= "table" or getmetatable(t) ~= nil then return false end
  for k in pairs(t) do
    if math.type(k) ~= "integer" then return true end
  end
  return next(t) == nil and param ~= "options"
end

-- Streamlit's positional parameters, then an opts table, merged into one table.
local function widget_params(kind, ...)
  local spec = WIDGET_SPEC[kind]
  local args = table.pack(...)
  local n = args.n
  while n > 0 and args[n] == nil do n = n - 1 end
  local opts = {}
  if n > 0 and is_opts(args[n], spec.params[n]) then
    opts = args[n]
    n = n - 1
  end
  if n > #spec.params then
    fail(kind, string.format("takes %d positional parameter%s after the label (%s), then an options table; got %d",
      #spec.params, #spec.params == 1 and "" or "s", table.concat(spec.params, ", "), n))
  end
  local p = {}
  for k, v in pairs(opts) do
    if not spec.allowed[k] then
      local similar = SIMILAR[k]
      local hint = ""
      if similar then
        hint = " (did you mean " .. (similar:find(" ") and similar or ("'" .. similar .. "'")) .. "?)"
      end
      local names = {}
      for name in pairs(spec.allowed) do names[#names + 1] = name end
      table.sort(names)
      fail(kind, "unknown option '" .. safe_text(k) .. "'" .. hint .. "; " .. kind .. " takes "
        .. table.concat(names, ", "))
    end
    p[k] = v
  end
  for i = 1, n do
    local name = spec.params[i]
    if args[i] ~= nil then
      if p[name] ~= nil then
        fail(kind, "'" .. name .. "' is given twice: as argument " .. (i + 1) .. " and in the options")
      end
      p[name] = args[i]
    end
  end
  return p
end

local function want(kind, p, name, ok, what)
  if p[name] ~= nil and not ok(p[name]) then fail(kind, name .. " must be " .. what .. ", got " .. show(p[name])) end
end
local function is_string(v) return type(v) == "string" end
local function is_boolean(v) return type(v) == "boolean" end
local function is_number(v) return type(v) == "number" and v == v end
local function is_callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__call ~= nil
end
local function one_of(...)
  local set = {}
  for _, v in ipairs({ ... }) do set[v] = true end
  return function(v) return set[v] == true end
end

local function fmt_number(v)
  if math.type(v) == "float" then
    local s = string.format("%.14g", v)
    if not s:find("[%.eEn]") then s = s .. ".0" end
    return s
  end
  return tostring(v)
end

-- Value checks: each returns the value as the widget holds it, or nil and
-- what is wrong with it.
local CHECK = {}

function CHECK.checkbox(_, v)
  if type(v) ~= "boolean" then return nil, "needs true or false, got " .. show(v) end
  return v
end
CHECK.toggle, CHECK.button = CHECK.checkbox, CHECK.checkbox

function CHECK.slider(p, v)
  if not is_number(v) then return nil, "needs a number, got " .. show(v) end
  if p.float then v = v + 0.0
  else
    local i = math.tointeger(v)
    if not i then return nil, "needs a whole number, got " .. fmt_number(v) end
    v = i
  end
  if (p.min_value and v < p.min_value) or (p.max_value and v > p.max_value) then
    return nil, string.format("%s is outside [%s, %s]", fmt_number(v),
      p.min_value and fmt_number(p.min_value) or "-inf", p.max_value and fmt_number(p.max_value) or "inf")
  end
  local base = p.min_value or p.default
  local k = (v - base) / p.step
  if math.abs(k - math.floor(k + 0.5)) > 1e-9 * math.max(1, math.abs(k)) then
    return nil, string.format("%s is not a step of %s from %s", fmt_number(v), fmt_number(p.step), fmt_number(base))
  end
  return v
end
CHECK.number_input = CHECK.slider

function CHECK.text_input(p, v)
  if type(v) ~= "string" then return nil, "needs a string, got " .. show(v) end
  if p.max_chars and (utf8.len(v) or #v) > p.max_chars then
    return nil, "is longer than max_chars (" .. p.max_chars .. ")"
  end
  return v
end

function CHECK.selectbox(p, v)
  for _, o in ipairs(p.options) do
    if o == v then return v end
  end
  return nil, show(v) .. " is not one of its options"
end
CHECK.radio = CHECK.selectbox

function CHECK.file_uploader() return nil, "cannot be set: this runtime takes no uploads" end
CHECK.camera_input = CHECK.file_uploader

-- Fills in defaults and checks the parameters; p.default is the widget's
-- initial value.
local NORMALIZE = {}

function NORMALIZE.checkbox(kind, p)
  want(kind, p, "value", is_boolean, "true or false")
  p.default = p.value or false
end
NORMALIZE.toggle = NORMALIZE.checkbox

local function numeric(kind, p, slider)
  for _, name in ipairs({ "min_value", "max_value", "value", "step" }) do want(kind, p, name, is_number, "a number") end
  local float = math.type(p.min_value) == "float" or math.type(p.max_value) == "float"
    or math.type(p.value) == "float" or math.type(p.step) == "float"
  local function as(v) if v ~= nil and float then return v + 0.0 end return v end
  p.float = float
  p.min_value, p.max_value, p.step = as(p.min_value), as(p.max_value), as(p.step)
  if slider then
    if p.min_value == nil then p.min_value = float and 0.0 or 0 end
    if p.max_value == nil then p.max_value = float and 1.0 or 100 end
  end
  if p.step == nil then p.step = float and 0.01 or 1 end
  -- (a NaN step was refused above: is_number)
  if p.step <= 0 then fail(kind, "step must be greater than 0, got " .. fmt_number(p.step)) end
  if p.min_value and p.max_value and p.min_value > p.max_value then
    fail(kind, "min_value " .. fmt_number(p.min_value) .. " is greater than max_value " .. fmt_number(p.max_value))
  end
  if not float then
    for _, name in ipairs({ "min_value", "max_value", "value", "step" }) do
      if p[name] ~= nil and math.type(p[name]) ~= "integer" then fail(kind, name .. " must be an integer") end
    end
  end
  local default = as(p.value)
  if default == nil then default = p.min_value or (float and 0.0 or 0) end
  if (p.min_value and default < p.min_value) or (p.max_value and default > p.max_value) then
    fail(kind, string.format("value %s must lie between min_value %s and max_value %s", fmt_number(default),
      p.min_value and fmt_number(p.min_value) or "-inf", p.max_value and fmt_number(p.max_value) or "inf"))
  end
  p.default = default
end
function NORMALIZE.slider(kind, p) numeric(kind, p, true) end
function NORMALIZE.number_input(kind, p)
  want(kind, p, "placeholder", is_string, "a string")
  numeric(kind, p, false)
end

function NORMALIZE.text_input(kind, p)
  want(kind, p, "value", is_string, "a string")
  want(kind, p, "placeholder", is_string, "a string")
  want(kind, p, "max_chars", function(v) return math.type(v) == "integer" and v > 0 end, "an integer > 0")
  want(kind, p, "type", one_of("default", "password"), "\"default\" or \"password\"")
  p.default = p.value or ""
  local _, problem = CHECK.text_input(p, p.default)
  if problem then fail(kind, "value " .. problem) end
end

function NORMALIZE.selectbox(kind, p)
  if type(p.options) ~= "table" then fail(kind, "options must be a list, got " .. show(p.options)) end
  local n = 0
  for i in ipairs(p.options) do n = i end
  for k in pairs(p.options) do
    if math.type(k) ~= "integer" or k < 1 or k > n then
      fail(kind, "options must be a list (keys 1..n), found key " .. show(k))
    end
  end
  want(kind, p, "index", function(v) return math.type(v) == "integer" and v >= 1 and v <= n end,
    n == 0 and "nil (there are no options)" or ("an integer from 1 to " .. n))
  want(kind, p, "format_func", is_callable, "a function")
  want(kind, p, "placeholder", is_string, "a string")
  want(kind, p, "horizontal", is_boolean, "a boolean")
  p.index = p.index or (n > 0 and 1 or nil)
  p.default = p.index and p.options[p.index]
  p.labels = {}
  for i, o in ipairs(p.options) do
    p.labels[i] = p.format_func and to_text(p.format_func(o)) or to_text(o)
  end
end
NORMALIZE.radio = NORMALIZE.selectbox

function NORMALIZE.button(kind, p)
  want(kind, p, "type", one_of("primary", "secondary", "tertiary"), "\"primary\", \"secondary\" or \"tertiary\"")
  want(kind, p, "use_container_width", is_boolean, "a boolean")
  p.default = false
end

function NORMALIZE.file_uploader(kind, p)
  want(kind, p, "type", function(v) return type(v) == "string" or type(v) == "table" end,
    "a string or a list of strings")
  want(kind, p, "accept_multiple_files", is_boolean, "a boolean")
end
NORMALIZE.camera_input = NORMALIZE.file_uploader

local function cached_widget_warning(kind, label, fname)
  return string.format("CachedWidgetWarning: the %s '%s' is used inside the cached function %s, "
    .. "whose key does not include widget values: it is shown, but changing it will not recompute %s. "
    .. "Pass experimental_allow_widgets = true to cache_resource, or move the widget out of %s.",
    kind, label, fname, fname, fname)
end

local widget_warning -- the replayable of raw.widget_warning, below

-- A widget: `handle` is the block it was called on (nil: the active block),
-- which is also the run's target while it runs.
local function widget(kind, handle, label, ...)
  local run = running(kind)
  local spec = WIDGET_SPEC[kind]
  if type(label) ~= "string" then fail(kind, "the label must be a string, got " .. show(label)) end
  local p = widget_params(kind, ...)
  local fname = cr.computing()
  if spec.refused and fname then
    error(string.format("%scache_resource.ui.%s cannot be used inside the cached function %s: its value "
      .. "(an uploaded file) cannot be part of a cache key. Call %s outside %s and pass what you need "
      .. "as an argument.", where(), kind, fname, kind, fname), 0)
  end
  if p.key ~= nil and type(p.key) ~= "string" and math.type(p.key) ~= "integer" then
    fail(kind, "key must be a string or an integer, got " .. show(p.key))
  end
  want(kind, p, "help", is_string, "a string")
  want(kind, p, "disabled", is_boolean, "a boolean")
  want(kind, p, "label_visibility", one_of("visible", "hidden", "collapsed"),
    "\"visible\", \"hidden\" or \"collapsed\"")
  NORMALIZE[kind](kind, p)
  local id = kind .. ":" .. tostring(p.key or label)
  if run.ids[id] then
    error(string.format("%sDuplicateWidgetID: there are multiple identical ui.%s widgets with the same id '%s' "
      .. "in this run. To fix this, give each one a unique key: ui.%s(%q, ..., { key = \"...\" }).",
      where(), kind, id, kind, label), 0)
  end
  run.ids[id] = true
  widget_defaults[id] = p.default
  local state = run.session.widgets
  local value = state[id]
  if value ~= nil and CHECK[kind](p, value) == nil then value = nil end -- no longer valid: back to the default
  if value == nil then
    value = p.default
    if not spec.one_shot then state[id] = value end
  end
  if spec.one_shot and value then run.pressed[#run.pressed + 1] = id end
  if fname and cr.widget_used(id, value) then
    widget_warning(handle, cached_widget_warning(kind, label, fname))
  end
  add(run.target, { kind = kind, label = label, id = id, key = p.key, value = value, help = p.help,
    disabled = p.disabled, label_visibility = p.label_visibility, min_value = p.min_value,
    max_value = p.max_value, step = p.step, options = p.options, labels = p.labels, index = p.index,
    placeholder = p.placeholder, max_chars = p.max_chars, type = p.type, horizontal = p.horizontal,
    use_container_width = p.use_container_width })
  run.session.known[id] = { kind = kind, label = label, key = p.key, params = p }
  return value
end

for _, kind in ipairs(WIDGETS) do
  raw[kind] = function(...) return widget(kind, nil, ...) end
end

-- ----------------------------------------------------- replayable surface

-- block:KIND(...): raw[KIND] with the block as the target of new elements.
local function in_block(block, kind, ...)
  local run = running(kind)
  local target = resolve(run, block, kind)
  if WIDGET_SPEC[kind] then return with_target(run, target, widget, kind, block, ...) end
  return with_target(run, target, raw[kind], ...)
end

local ALL = { "write", "code", "exception", "json", "divider", "container", "expander", "empty" }
for _, k in ipairs(ELEMENTS) do ALL[#ALL + 1] = k end
for _, k in ipairs(WIDGETS) do ALL[#ALL + 1] = k end

-- The documentation of the functions the loop below makes (ui.title,
-- ui.checkbox...): LDoc reads these comments by their @function names.

--- Elements.
-- Each call adds an element to the active block: the main area, or the
-- block named by `with` (or a block method, see `Block`). Text arguments
-- may be any value: a string is shown as it is, a table without a metatable
-- as JSON (`to_json`), anything else through `tostring` (an object whose
-- `__tostring` fails still shows something). Like every function of this
-- module that shows something, they raise unless a session is running a
-- script (`Session:run`), and a cached function that calls them shows the
-- same elements again on every hit.
-- @section elements

--- A title (Streamlit's `st.title`): the largest heading.
-- @function title
-- @param body the text

--- A header: a second-level heading.
-- @function header
-- @param body the text

--- A subheader: a third-level heading.
-- @function subheader
-- @param body the text

--- Preformatted text, in a fixed-width font.
-- @function text
-- @param body the text

--- A little Markdown: paragraphs (split by blank lines), inline code
-- between backticks, bold between double stars, italics between single
-- stars, and links (the text in square brackets, then an http or https
-- address in parentheses). Everything else shows as it is written, HTML
-- included.
-- @function markdown
-- @param body the Markdown source

--- A caption: small, muted text.
-- @function caption
-- @param body the text

--- A success message (a green box).
-- @function success
-- @param body the text

--- An informational message (a blue box).
-- @function info
-- @param body the text

--- A warning message (a yellow box).
-- @function warning
-- @param body the text

--- An error message (a red box). It only shows the message: nothing is
-- raised.
-- @function error
-- @param body the text

--- Streamlit's `st.write`: its arguments as text, joined by spaces (a
-- table without a metatable as JSON).
-- @function write
-- @param ... the values to show

--- A code block.
-- @function code
-- @param body the code
-- @tparam[opt] string language the name of its language, kept with the
-- block (after the opening fence in text, as `data-language` in HTML)

--- An exception: an error value shown like an error a script raises (an
-- error in the script itself becomes one of these, with its traceback).
-- @function exception
-- @param err the error value (usually a message)

--- A value as pretty-printed JSON with sorted keys (`to_json`).
-- @function json
-- @param value any value; what JSON cannot hold shows as its text, and a
-- cycle as `"<cycle>"`

--- A horizontal rule.
-- @function divider

--- JSON text with sorted keys (lua-dkjson), so the same table always gives
-- the same text: every table's keys are written as strings, a table with a
-- metatable and any value JSON cannot hold (a function, a userdata) as its
-- text, and a cycle as `"<cycle>"`. It shows nothing; `json` and the text
-- conversions use it.
-- @function to_json
-- @param value any value
-- @tparam[opt] boolean pretty indent the text over several lines
-- @treturn string the JSON text

--- Widgets.
-- A widget shows an input and returns its current value in the session:
-- its initial value on the first run, then whatever the user set
-- (`Session:set`, or the page served by `cache_resource.server`). A value
-- that the widget's parameters no longer allow (an option that went away)
-- falls back to the initial one.
--
-- The parameters follow Streamlit's: the label, then positional parameters
-- (each one may be given by name in `opts` instead, but not both ways),
-- then an options table. Every widget also takes these options:
--
-- * `key` (string or integer): identifies the widget instead of its label.
--   A widget's id is its kind and its key or label, e.g.
--   `"checkbox:Show raw data"`; two widgets of one run with the same id
--   raise `DuplicateWidgetID`.
-- * `help` (string): a tooltip.
-- * `disabled` (boolean): shown, but cannot be changed.
-- * `label_visibility`: `"visible"` (the default), `"hidden"` (the space
--   stays) or `"collapsed"`.
--
-- An unknown option raises, with the options the widget takes. A widget
-- used inside a cached function shows a `CachedWidgetWarning` (its value
-- is not part of the key), unless the function was wrapped with
-- `experimental_allow_widgets = true`.
-- @section widgets

--- A checkbox.
-- @function checkbox
-- @tparam string label its label
-- @tparam[opt=false] boolean value the initial value
-- @tparam[opt] table opts the options every widget takes
-- @treturn boolean whether it is ticked

--- A toggle: a checkbox shown as a switch.
-- @function toggle
-- @tparam string label its label
-- @tparam[opt=false] boolean value the initial value
-- @tparam[opt] table opts the options every widget takes
-- @treturn boolean whether it is on

--- A slider over a range of numbers. It holds integers unless one of
-- `min_value`, `max_value`, the initial value or `step` is a float; then it
-- holds floats, and its defaults become 0.0, 1.0 and 0.01.
-- @function slider
-- @tparam string label its label
-- @tparam[opt=0] number min_value the smallest value
-- @tparam[opt=100] number max_value the largest value
-- @tparam[opt] number value the initial value (default `min_value`)
-- @tparam[opt=1] number step the distance between values, counted from
-- `min_value`
-- @tparam[opt] table opts the options every widget takes
-- @treturn number the value, an integer or a float like the parameters

--- A number field. Integers unless one of `min_value`, `max_value`, the
-- initial value or `step` is a float (then floats, and `step` defaults to
-- 0.01).
-- @function number_input
-- @tparam string label its label
-- @tparam[opt] number min_value the smallest value (none by default)
-- @tparam[opt] number max_value the largest value (none by default)
-- @tparam[opt] number value the initial value (default `min_value`, or 0)
-- @tparam[opt=1] number step the distance between values, counted from
-- `min_value` (or from the initial value)
-- @tparam[opt] table opts the options every widget takes, and
-- `placeholder` (string)
-- @treturn number the value, an integer or a float like the parameters

--- A one-line text field.
-- @function text_input
-- @tparam string label its label
-- @tparam[opt=""] string value the initial text
-- @tparam[opt] table opts the options every widget takes, and
-- `placeholder` (string), `max_chars` (integer: the most characters, UTF-8
-- counted) and `type` (`"default"` or `"password"`)
-- @treturn string the text

--- A drop-down list of options.
-- @function selectbox
-- @tparam string label its label
-- @tparam table options the choices, a list (keys 1 to n) of any values;
-- they are shown as text (see Elements)
-- @tparam[opt=1] integer index the position of the initial choice, from 1
-- @tparam[opt] table opts the options every widget takes, and
-- `format_func` (a function from an option to the text shown for it) and
-- `placeholder` (string)
-- @return the chosen option itself (not its index), or `nil` when
-- `options` is empty

--- Radio buttons: one choice among options, all shown.
-- @function radio
-- @tparam string label its label
-- @tparam table options the choices, a list (keys 1 to n) of any values
-- @tparam[opt=1] integer index the position of the initial choice, from 1
-- @tparam[opt] table opts the options every widget takes, and
-- `format_func` (a function from an option to the text shown for it) and
-- `horizontal` (boolean: in a row rather than a column)
-- @return the chosen option itself (not its index), or `nil` when
-- `options` is empty

--- A button.
-- @function button
-- @tparam string label its label
-- @tparam[opt] table opts the options every widget takes, and `type`
-- (`"primary"`, `"secondary"` or `"tertiary"`) and `use_container_width`
-- (boolean)
-- @treturn boolean `true` in the one run that follows a click, `false`
-- otherwise

--- A file upload field. This runtime takes no uploads: it is shown
-- disabled and returns `nil`. It raises inside a cached function, as an
-- uploaded file cannot be part of a key.
-- @function file_uploader
-- @tparam string label its label
-- @tparam[opt] table opts the options every widget takes, and `type` (an
-- extension or a list of them) and `accept_multiple_files` (boolean)
-- @treturn nil always

--- A camera input. Like `file_uploader`: shown disabled, returns `nil`,
-- and raises inside a cached function.
-- @function camera_input
-- @tparam string label its label
-- @tparam[opt] table opts the options every widget takes
-- @treturn nil always

--- Layout.
-- Blocks hold elements: a new element goes into the active block, which
-- `with` changes, or into the block whose method adds it (`Block`). A
-- block belongs to the run that created it; a cached function can only
-- write into blocks it created itself (anything else raises
-- `CacheReplayClosureError`, as its replays could not find that block).
-- @section layout

--- A container: a block that groups elements.
-- @function container
-- @tparam[opt] table opts `border` (boolean): draw a border around it
-- @treturn Block the container

--- An expander: a block that shows its label and opens to show its
-- elements. `expander(label, opts)` works too.
-- @function expander
-- @tparam string label its label
-- @tparam[opt=false] boolean expanded whether it starts open (or
-- `opts.expanded`)
-- @tparam[opt] table opts `expanded` (boolean)
-- @treturn Block the expander

--- A block that holds one element at most: each element added to it
-- replaces the one it held (a placeholder to update).
-- @function empty
-- @treturn Block the placeholder

--- The sidebar of whatever run is in progress: a block (`Block`), to write
-- into with its methods or with `with`.
-- @tfield Block sidebar

for _, kind in ipairs(ALL) do
  ui[kind] = cr.replayable(raw[kind], kind)
  Block[kind] = cr.replayable(function(block, ...) return in_block(block, kind, ...) end, "block." .. kind)
end

widget_warning = cr.replayable(raw.widget_warning, "widget_warning")
local open_columns = cr.replayable(raw.columns, "columns")
local column = cr.replayable(raw.column, "column")
local block_columns = cr.replayable(function(block, ...)
  local run = running("columns")
  return with_target(run, resolve(run, block, "columns"), raw.columns, ...)
end, "block.columns")

local function unpack_columns(row)
  local out = {}
  for i = 1, #row.blocks do out[i] = column(row, i) end
  return table.unpack(out)
end

--- Columns: blocks side by side, returned one by one
-- (`local left, right = ui.columns(2)`).
-- @tparam integer|{number,...} spec how many columns of equal width (1 to
-- 64), or a list of their relative widths (positive numbers)
-- @tparam[opt] table opts `gap`: `"small"` (the default), `"medium"` or
-- `"large"`
-- @treturn Block... one block per column, left to right
function ui.columns(spec, opts)
  return unpack_columns(open_columns(spec, opts))
end

-- block:columns(spec [, opts]): columns inside a block (see the Block class
-- in the reference).
function Block.columns(block, spec, opts)
  return unpack_columns(block_columns(block, spec, opts))
end

local enter = cr.replayable(raw.enter, "with.enter")
local leave = cr.replayable(raw.leave, "with.leave")

--- Runs `fn(...)` with `block` as the active block (Streamlit's
-- `with block:`): what `fn` shows goes into it. The previous active block
-- comes back afterwards, even if `fn` raises.
-- @tparam Block block a block of this run, or `sidebar`
-- @tparam function fn what to run
-- @param ... arguments for `fn`
-- @return what `fn` returns
function ui.with(block, fn, ...)
  if not is_callable(fn) then fail("with", "expected a function to run in the block, got " .. show(fn)) end
  enter(block)
  return finally(leave, fn, ...)
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
    elseif k == "container" or k == "empty" then
      render_text(el.children, k == "container" and indent .. "  " or indent, out)
    elseif k == "columns" then
      for i, col in ipairs(el.children) do
        out[#out + 1] = string.format("%s[column %d of %d]", indent, i, #el.children)
        render_text(col.children, indent .. "  ", out)
      end
    elseif k == "expander" then
      out[#out + 1] = indent .. (el.expanded and "v " or "> ") .. el.label
      render_text(el.children, indent .. "  ", out)
    elseif k == "code" then line = "```" .. (el.language or "") .. "\n" .. el.body .. "\n```"
    elseif k == "checkbox" or k == "toggle" then line = (el.value and "[x] " or "[ ] ") .. el.label
    elseif k == "button" then line = "[ " .. el.label .. " ]"
    elseif WIDGET_SPEC[k] then
      line = el.label .. ": " .. (el.value == nil and "(none)" or to_text(el.value))
      if el.labels then line = line .. "  (" .. table.concat(el.labels, " | ") .. ")" end
    else line = (TEXT_PREFIX[k] or "") .. (el.body or "") end
    if line then out[#out + 1] = indent .. line:gsub("\n", "\n" .. indent) end
  end
  return out
end

local function esc(s)
  return (tostring(s):gsub("[&<>\"']",
    { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }))
end

-- A little Markdown, after escaping: `code`, **bold**, *italic*, [links](http...),
-- paragraphs.
local function markdown_html(src)
  local paragraphs = {}
  for para in (src .. "\n\n"):gmatch("(.-)\n%s*\n") do
    if para:find("%S") then
      local codes = {}
      local s = esc(para):gsub("`([^`]+)`", function(c)
        codes[#codes + 1] = "<code>" .. c .. "</code>"
        return "\1" .. #codes .. "\2"
      end)
      s = s:gsub("%*%*(.-)%*%*", "<strong>%1</strong>"):gsub("%*([^%*]+)%*", "<em>%1</em>")
      s = s:gsub("%[([^%]]+)%]%((https?://[^%s%)]+)%)", '<a href="%2">%1</a>')
      s = s:gsub("\n", "<br>"):gsub("\1(%d+)\2", function(i) return codes[tonumber(i)] end)
      paragraphs[#paragraphs + 1] = "<p>" .. s .. "</p>"
    end
  end
  return table.concat(paragraphs)
end

local HTML_TAG = { title = "h1", header = "h2", subheader = "h3", text = "pre", write = "p",
  caption = "p", json = "pre" }
local ALERT_ICON = { success = "&#10004;", info = "&#8505;", warning = "&#9888;", error = "&#10006;",
  exception = "&#10006;" }

local render_list

local function attr(name, v)
  if v == nil or v == false then return "" end
  if v == true then return " " .. name end
  return string.format(' %s="%s"', name, esc(type(v) == "number" and fmt_number(v) or v))
end

-- The label of a widget, with its help text as a tooltip.
local function label_html(el, for_id, tag)
  local cls = "cr-label"
  if el.label_visibility == "hidden" then cls = cls .. " cr-label-hidden"
  elseif el.label_visibility == "collapsed" then cls = cls .. " cr-label-collapsed" end
  local help = el.help and string.format(' <span class="cr-help" title="%s">?</span>', esc(el.help)) or ""
  tag = tag or "label"
  return string.format('<%s class="%s"%s>%s%s</%s>', tag, cls, for_id and attr("for", for_id) or "",
    esc(el.label), help, tag)
end

local function widget_html(el, ctx, out)
  local k = el.kind
  ctx.n = ctx.n + 1
  local dom = "cr-w" .. ctx.n
  local name, dis = esc(el.id), attr("disabled", el.disabled)
  local open = string.format('<div class="cr-widget cr-%s" data-id="%s">', k, name)
  local chosen -- the option shown as selected
  for i, o in ipairs(el.options or {}) do
    if o == el.value then chosen = i; break end
  end
  if k == "checkbox" or k == "toggle" then
    out[#out + 1] = string.format('%s<input type="hidden" name="%s" value="false"%s><label class="cr-check">'
      .. '<input type="checkbox" id="%s" name="%s" value="true" data-widget="%s"%s%s>%s<span>%s</span>%s</label></div>',
      open, name, dis, dom, name, k, el.value and " checked" or "", dis,
      k == "toggle" and '<span class="cr-switch"></span>' or "", esc(el.label),
      el.help and string.format(' <span class="cr-help" title="%s">?</span>', esc(el.help)) or "")
  elseif k == "slider" then
    out[#out + 1] = string.format('%s<div class="cr-slider-head">%s<output class="cr-value" for="%s">%s</output></div>'
      .. '<input type="range" id="%s" name="%s" data-widget="slider"%s%s%s%s%s>'
      .. '<div class="cr-slider-ends"><span>%s</span><span>%s</span></div></div>',
      open, label_html(el, dom), dom, esc(fmt_number(el.value)), dom, name, attr("min", el.min_value),
      attr("max", el.max_value), attr("step", el.step), attr("value", el.value), dis,
      esc(fmt_number(el.min_value)), esc(fmt_number(el.max_value)))
  elseif k == "number_input" then
    out[#out + 1] = string.format(
      '%s%s<input type="number" id="%s" name="%s" data-widget="number_input"%s%s%s%s%s%s></div>',
      open, label_html(el, dom), dom, name, attr("min", el.min_value), attr("max", el.max_value),
      attr("step", el.step), attr("value", el.value), attr("placeholder", el.placeholder), dis)
  elseif k == "text_input" then
    out[#out + 1] = string.format('%s%s<input type="%s" id="%s" name="%s" data-widget="text_input"%s%s%s%s></div>',
      open, label_html(el, dom), el.type == "password" and "password" or "text", dom, name, attr("value", el.value),
      attr("placeholder", el.placeholder), attr("maxlength", el.max_chars), dis)
  elseif k == "selectbox" then
    local opts = {}
    for i, text in ipairs(el.labels) do
      opts[i] = string.format('<option value="%d"%s>%s</option>', i, i == chosen and " selected" or "", esc(text))
    end
    out[#out + 1] = string.format('%s%s<select id="%s" name="%s" data-widget="selectbox"%s>%s</select></div>',
      open, label_html(el, dom), dom, name, dis, table.concat(opts))
  elseif k == "radio" then
    local opts = {}
    for i, text in ipairs(el.labels) do
      opts[i] = string.format('<label class="cr-choice"><input type="radio" name="%s" value="%d"'
        .. ' data-widget="radio"%s%s><span>%s</span></label>',
        name, i, i == chosen and " checked" or "", dis, esc(text))
    end
    out[#out + 1] = string.format(
      '<fieldset class="cr-widget cr-radio%s" data-id="%s">%s<div class="cr-choices">%s</div></fieldset>',
      el.horizontal and " cr-horizontal" or "", name, label_html(el, nil, "legend"), table.concat(opts))
  elseif k == "button" then
    out[#out + 1] = string.format('%s<button type="submit" class="cr-button cr-button-%s%s" name="%s" value="true"'
      .. ' data-widget="button"%s%s>%s</button></div>',
      open, el.type or "secondary", el.use_container_width and " cr-wide" or "", name, dis,
      el.help and attr("title", el.help) or "", esc(el.label))
  else -- file_uploader, camera_input
    out[#out + 1] = string.format('%s%s<div class="cr-dropzone"><input type="file" id="%s" disabled%s>'
      .. '<small>Uploads are not taken by this server.</small></div></div>',
      open, label_html(el, dom), dom, k == "camera_input" and ' accept="image/*" capture' or "")
  end
end

local function spinner_html(sp)
  return string.format(
    '<div class="cr-spinner"%s><span class="cr-spin"></span><span class="cr-spinner-text">%s</span>%s</div>',
    sp.show_time and ' data-show-time' or "", esc(sp.body),
    sp.show_time and ' <span class="cr-elapsed">(0.0 s)</span>' or "")
end

local function element_html(el, ctx, out)
  local k = el.kind
  if k == "markdown" then
    out[#out + 1] = '<div class="cr-markdown">' .. markdown_html(el.body) .. "</div>"
  elseif HTML_TAG[k] then
    out[#out + 1] = string.format('<%s class="cr-%s">%s</%s>', HTML_TAG[k], k, esc(el.body), HTML_TAG[k])
  elseif ALERT_ICON[k] then
    local trace = el.trace
      and string.format('<details class="cr-trace"><summary>Traceback</summary><pre>%s</pre></details>', esc(el.trace))
      or ""
    out[#out + 1] = string.format('<div class="cr-alert cr-%s" role="alert"><span class="cr-icon">%s</span>'
      .. '<div class="cr-alert-body">%s%s</div></div>', k, ALERT_ICON[k], esc(el.body), trace)
  elseif k == "code" then
    out[#out + 1] = string.format('<pre class="cr-code"%s><code>%s</code></pre>', attr("data-language", el.language),
      esc(el.body))
  elseif k == "divider" then out[#out + 1] = '<hr class="cr-divider">'
  elseif k == "container" then
    out[#out + 1] = el.border and '<div class="cr-container cr-border">' or '<div class="cr-container">'
    render_list(el.children, ctx, out)
    out[#out + 1] = "</div>"
  elseif k == "empty" then
    out[#out + 1] = '<div class="cr-empty">'
    render_list(el.children, ctx, out)
    out[#out + 1] = "</div>"
  elseif k == "expander" then
    out[#out + 1] = string.format('<details class="cr-expander"%s><summary>%s</summary><div class="cr-expander-body">',
      el.expanded and " open" or "", esc(el.label))
    render_list(el.children, ctx, out)
    out[#out + 1] = "</div></details>"
  elseif k == "columns" then
    out[#out + 1] = string.format('<div class="cr-columns cr-gap-%s">', el.gap or "small")
    for _, col in ipairs(el.children) do
      out[#out + 1] = string.format('<div class="cr-column" style="flex: %s 1 0">', fmt_number(col.width))
      render_list(col.children, ctx, out)
      out[#out + 1] = "</div>"
    end
    out[#out + 1] = "</div>"
  elseif WIDGET_SPEC[k] then
    widget_html(el, ctx, out)
  end
end

render_list = function(list, ctx, out)
  for _, el in ipairs(list) do element_html(el, ctx, out) end
  if ctx.spinner and ctx.spinner.list == list then out[#out + 1] = spinner_html(ctx.spinner) end
end

--- The page of one run (`ui.Page`), returned by `Session:run`. It is a list
-- of the elements of the main area, in order. An element `el` is a table:
-- `el.kind` (the name of the function that added it, or `"column"`), and as
-- that kind has them `el.body` (its text), `el.label`, `el.value`, `el.id`
-- (a widget's id), `el.children` (the elements of a block) and the widget's
-- parameters.
-- @type Page

--- The elements of the sidebar, in order.
-- @tfield table sidebar

--- The texts of the spinners shown during the run, in order (with the time
-- taken, when the cached function asked for it with `show_time`).
-- @tfield {string,...} spinners

--- The spinner showing now, while a cached function computes; `nil`
-- otherwise. A table with `body` (its text) and `show_time`.
-- @tfield ?table transient

--- The page as text for a terminal, or as HTML: a sidebar, if used, and
-- the main area; every user string escaped; widgets are form controls named
-- by their id.
-- @tparam[opt="text"] string format `"text"` or `"html"`
-- @tparam[opt] table opts `spinner`: a spinner to show where it runs
-- (`page.transient`), HTML only
-- @treturn string the page
function Page:render(format, opts)
  format = format or "text"
  if format == "text" then
    if #self.sidebar == 0 then return table.concat(render_text(self, "", {}), "\n") end
    local out = { "[sidebar]" }
    render_text(self.sidebar, "  ", out)
    out[#out + 1] = "[main]"
    return table.concat(render_text(self, "", out), "\n")
  end
  if format == "html" then
    local ctx = { n = 0, spinner = opts and opts.spinner }
    local out = { '<div class="cr-page">' }
    if #self.sidebar > 0 then
      out[#out + 1] = '<aside class="cr-sidebar">'
      render_list(self.sidebar, ctx, out)
      out[#out + 1] = "</aside>"
    end
    out[#out + 1] = '<main class="cr-main">'
    render_list(self, ctx, out)
    out[#out + 1] = "</main></div>"
    return table.concat(out, "\n")
  end
  error("cache_resource.ui: page:render takes \"text\" or \"html\", got " .. safe_text(format), 2)
end

--- Every element of the page in order (the sidebar's first), blocks
-- flattened, each block element before its children.
-- @treturn {table,...} the elements
function Page:flat()
  local out = {}
  local function walk(list)
    for _, el in ipairs(list) do
      out[#out + 1] = el
      if el.children then walk(el.children) end
    end
  end
  walk(self.sidebar)
  walk(self)
  return out
end

-- --------------------------------------------------------------- sessions

local Session = {}
Session.__index = Session
Session.__name = "cache_resource.ui.session"

-- The C core asks for widget values (experimental_allow_widgets keys) and
-- reports spinners through these hooks; a session installs them when it
-- runs a script.
local function widget_source(id)
  local v = current and current.session.widgets[id]
  if v == nil then v = widget_defaults[id] end
  return v
end

local function notify(run, event, spinner)
  local listener = run.session.listener
  if listener then listener(event, run.page, spinner) end
end

local function spinner_hook(event, text, show_time)
  local run = current
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
function ui.session(id)
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
function ui.page()
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
  run.main = setmetatable({ children = page, token = run.token, replay_of = false }, Block)
  run.side = setmetatable({ children = page.sidebar, token = run.token, replay_of = false }, Block)
  run.target = run.main
  local saved, saved_session = current, cr.session()
  -- Whatever happens below, the previous run and session come back.
  finally(function()
    current = saved
    cr.set_session(saved_session)
    page.transient = nil
  end, function(...)
    current = run
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
  local v, problem = CHECK[w.kind](w.params, value)
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

--- A block (`ui.Block`): the sidebar, a container, an expander, a
-- placeholder (`empty`) or a column. A block has every element and widget
-- function, and `container`, `expander`, `empty` and `columns`, as methods:
-- `block:NAME(...)` takes the parameters of `ui.NAME(...)`, returns what it
-- returns, and adds to `block` rather than to the active block.
--
--     local left, right = ui.columns(2)
--     left:header("Inputs")
--     local n = left:slider("n", 1, 10)
--     right:write("n squared is", n * n)
--     ui.sidebar:caption("in the sidebar")
-- @type Block

--- Every element, widget and block function of the module, as a method.
-- `title`, `header`, `subheader`, `text`, `markdown`, `caption`, `success`,
-- `info`, `warning`, `error`, `write`, `code`, `exception`, `json`,
-- `divider`, `checkbox`, `toggle`, `slider`, `text_input`, `number_input`,
-- `selectbox`, `radio`, `button`, `file_uploader`, `camera_input`,
-- `container`, `expander`, `empty` and `columns`.
-- @function Block:NAME
-- @param ... the parameters of the module function of that name
-- @return what that function returns

ui.Page, ui.Session, ui.Block = Page, Session, Block

return ui
