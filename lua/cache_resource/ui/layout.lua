-- cache_resource.ui.layout: the layout blocks (ui.container, ui.columns,
-- ui.expander, ui.empty) and entering a block (ui.with). Internal:
-- `cache_resource.ui` makes them replayable and documents them.
local fmt = require "cache_resource.ui.format"
local model = require "cache_resource.ui.model"

fmt.internal_file()
local fail, show, safe_text = fmt.fail, fmt.show, fmt.safe_text
local running, append, new_block, resolve = model.running, model.append, model.new_block, model.resolve

local M = {}

-- The functions that do the work, by kind; each returns the new block.
local raw = {}
M.raw = raw

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
  local row = model.new_row(run)
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

-- ui.with: enter and leave are recorded like any UI call, so a cached
-- function that uses ui.with replays into the block it names.
function raw.enter(block)
  local run = running("with")
  local target = resolve(run, block, "with")
  run.stack[#run.stack + 1] = run.target
  run.target = target
end

function raw.leave()
  local run = model.current()
  if run and #run.stack > 0 then
    run.target = run.stack[#run.stack]
    run.stack[#run.stack] = nil
  end
end

return M
