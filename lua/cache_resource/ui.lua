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

-- The module is assembled here from its parts: the run in progress and its
-- blocks (ui/model.lua), the elements (ui/elements.lua), the widgets
-- (ui/widgets.lua), the layout blocks (ui/layout.lua), the page and its
-- rendering (ui/page.lua) and sessions (ui/session.lua), with the text of
-- values in ui/format.lua. Every function that shows something is made a
-- replayable here, once.
local cr = require "cache_resource"
local fmt = require "cache_resource.ui.format"
local model = require "cache_resource.ui.model"
local elements = require "cache_resource.ui.elements"
local widgets = require "cache_resource.ui.widgets"
local layout = require "cache_resource.ui.layout"
local Page = require "cache_resource.ui.page"
local session = require "cache_resource.ui.session"

fmt.internal_file()
local fail, show, is_callable, finally = fmt.fail, fmt.show, fmt.is_callable, fmt.finally
local running, resolve, with_target = model.running, model.resolve, model.with_target
local Block, Session = model.Block, session.Session

local ui = {}

-- The functions that do the work, by kind; ui.* and block methods wrap them
-- as replayables.
local raw = {}
for _, part in ipairs({ elements, widgets, layout }) do
  for kind, fn in pairs(part.raw) do raw[kind] = fn end
end

-- block:KIND(...): raw[KIND] with the block as the target of new elements.
local function in_block(block, kind, ...)
  local run = running(kind)
  local target = resolve(run, block, kind)
  if widgets.is_widget(kind) then return with_target(run, target, widgets.widget, kind, block, ...) end
  return with_target(run, target, raw[kind], ...)
end

local ALL = { "write", "code", "exception", "json", "divider", "container", "expander", "empty" }
for _, k in ipairs(elements.ELEMENTS) do ALL[#ALL + 1] = k end
for _, k in ipairs(widgets.WIDGETS) do ALL[#ALL + 1] = k end

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

ui.to_json = fmt.to_json
ui.sidebar = model.sidebar

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

ui.session, ui.page = session.session, session.page

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

--- The end of the class.
-- @section end

ui.Page, ui.Session, ui.Block = Page, Session, Block

return ui
