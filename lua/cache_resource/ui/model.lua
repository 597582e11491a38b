-- cache_resource.ui.model: the run in progress and its blocks. Internal:
-- `cache_resource.ui` is the public module.
--
-- A run is one execution of a script by a session (Session:run makes it):
--
--   { session,     -- the session running it
--     page,        -- its Page (the main area's elements; page.sidebar)
--     token,       -- a number no other run has: blocks carry it
--     target,      -- the active block, where new elements go
--     main, side,  -- the blocks of the main area and of the sidebar
--     stack,       -- the targets ui.with saved, innermost last
--     ids,         -- widget id -> true for the widgets shown so far
--     pressed,     -- ids of the buttons that are true in this run
--     co }         -- the coroutine running the script
--
-- A block is { children = the list it appends to, token = its run's token,
-- replay_of = the cached function whose replay created it (or false),
-- single = true for ui.empty() }. The rows of ui.columns are
-- { token, replay_of, blocks = { one block per column } }.
local cr = require "cache_resource"
local fmt = require "cache_resource.ui.format"

fmt.internal_file()
local fail, show, where = fmt.fail, fmt.show, fmt.where

local M = {}

local current = nil -- the run in progress, or nil

local Block = {}
Block.__index = Block
Block.__name = "cache_resource.ui.block"
M.Block = Block

local Row = { __name = "cache_resource.ui.columns" }
Row.__index = Row

-- The sidebar of whatever run is in progress (public as ui.sidebar).
M.sidebar = setmetatable({ sidebar = true }, Block)

-- The run in progress, or nil.
function M.current()
  return current
end

-- Makes `run` (or nil) the run in progress.
function M.set_current(run)
  current = run
end

-- The run in progress; raises, naming ui.WHAT, when there is none.
function M.running(what)
  if current == nil then
    error(where() .. "cache_resource.ui." .. what
      .. ": no script is running; call it from a script given to session:run()", 0)
  end
  return current
end

-- Adds an element to a block; an `empty` block holds one element at most.
function M.add(block, el)
  local list = block.children
  if block.single then
    for i = #list, 1, -1 do list[i] = nil end
  end
  list[#list + 1] = el
  return el
end

-- Adds an element to the active block of the run in progress.
function M.append(el)
  return M.add(M.running(el.kind).target, el)
end

-- A new block of this run, for the element `el` (which holds its children).
function M.new_block(run, el, single)
  return setmetatable({ children = el.children, token = run.token, replay_of = cr.replaying() or false,
    single = single or nil }, Block)
end

-- The block of a run's main area or sidebar: `list` is the page or its sidebar.
function M.root_block(run, list)
  return setmetatable({ children = list, token = run.token, replay_of = false }, Block)
end

-- A new row of columns of this run: `blocks` is filled by the caller.
function M.new_row(run)
  return setmetatable({ token = run.token, replay_of = cr.replaying() or false, blocks = {} }, Row)
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
function M.resolve(run, block, what)
  if rawequal(block, M.sidebar) then return run.side end
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

-- Runs fn(...) with `block` as the run's target, whatever happens.
function M.with_target(run, block, fn, ...)
  local saved = run.target
  run.target = block
  return fmt.finally(function() run.target = saved end, fn, ...)
end

return M
