-- cache_resource.ui.widgets: the widgets (ui.checkbox, ui.slider...): their
-- parameters, the values they take, and showing one. Internal:
-- `cache_resource.ui` makes them replayable and documents them.
local cr = require "cache_resource"
local fmt = require "cache_resource.ui.format"
local model = require "cache_resource.ui.model"

fmt.internal_file()
local fail, show, safe_text, where = fmt.fail, fmt.show, fmt.safe_text, fmt.where
local fmt_number, is_callable, to_text = fmt.fmt_number, fmt.is_callable, fmt.to_text
local running, add, resolve = model.running, model.add, model.resolve

local M = {}

local WIDGETS = { "checkbox", "toggle", "slider", "text_input", "number_input", "selectbox",
  "radio", "button", "file_uploader", "camera_input" }
M.WIDGETS = WIDGETS

local defaults = {} -- widget id -> its initial value, so a new session keys like the first

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
local function one_of(...)
  local set = {}
  for _, v in ipairs({ ... }) do set[v] = true end
  return function(v) return set[v] == true end
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

-- The CachedWidgetWarning element, into `handle` (a block, or nil for the
-- active block) so that a replay puts it where the live call did.
local widget_warning = cr.replayable(function(handle, text)
  local run = running("widget")
  local block = handle == nil and run.target or resolve(run, handle, "widget")
  add(block, { kind = "exception", body = text })
end, "widget_warning")

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
  defaults[id] = p.default
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

M.widget = widget

-- The functions that do the work, by kind: each shows its widget in the
-- active block and returns its value.
M.raw = {}
for _, kind in ipairs(WIDGETS) do
  M.raw[kind] = function(...) return widget(kind, nil, ...) end
end

-- Whether `kind` is the kind of a widget.
function M.is_widget(kind)
  return WIDGET_SPEC[kind] ~= nil
end

-- The value the widget `kind` with parameters `params` holds for `value`
-- (a number converted as its parameters say), or nil and what is wrong
-- with it.
function M.check(kind, params, value)
  return CHECK[kind](params, value)
end

-- The initial value of the widget `id`, as the latest run that showed it
-- (in any session) computed it; nil when none has.
function M.default(id)
  return defaults[id]
end

return M
