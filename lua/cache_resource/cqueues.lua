--- cache_resource.cqueues: connects cache_resource to lua-cqueues.
--
--   require "cache_resource.cqueues"
--
-- installs a scheduler: a coroutine that finds its key being computed by
-- another one waits on a cqueues condition variable until the owner ends
-- (it is resumed once, never polled), and background refreshes
-- (`refresh_mode = "background"`) run as new coroutines of the running
-- controller. The module table has `install` to install it again and
-- `uninstall`.
local cqueues = require "cqueues"
local condition = require "cqueues.condition"
local cr = require "cache_resource"

local M = {}

-- token -> condition variable, while coroutines wait on that token. A
-- token is woken once, when its owner ends, and never waited on again.
local conds = {}
local fallback = nil -- install(cq): runs refreshes started outside a controller

local function wait(token)
  local cond = conds[token]
  if cond == nil then
    cond = condition.new()
    conds[token] = cond
  end
  cond:wait()
end

local function wake(token)
  local cond = conds[token]
  if cond ~= nil then
    conds[token] = nil
    cond:signal()
  end
end

local function spawn(fn)
  local cq = cqueues.running() or fallback
  if cq == nil then
    error("cache_resource.cqueues: no cqueues controller is running this coroutine; call cached functions "
      .. "from a controller's coroutines, or name one with require(\"cache_resource.cqueues\").install(cq)", 0)
  end
  cq:wrap(fn)
end

--- The scheduler table given to `cache_resource.set_scheduler`.
-- @tfield function wait `wait(token)`: parks the running coroutine on a
-- condition variable until `wake(token)`
-- @tfield function wake `wake(token)`: resumes the coroutines waiting on
-- the token
-- @tfield function spawn `spawn(fn)`: runs `fn` as a new coroutine of the
-- running controller (or of the one given to `install`); raises when
-- there is neither
-- @table scheduler
M.scheduler = { wait = wait, wake = wake, spawn = spawn }

--- Makes this the module's scheduler (`require` does it).
-- @param[opt] cq a cqueues controller that runs the background refreshes
-- started outside of any controller
-- @return the module table
function M.install(cq)
  fallback = cq
  cr.set_scheduler(M.scheduler)
  return M
end

--- Removes the scheduler if it is still this one.
-- @return the module table
function M.uninstall()
  if cr.scheduler() == M.scheduler then cr.set_scheduler(nil) end
  fallback = nil
  return M
end

--- How many tokens have coroutines waiting on them (for tests).
-- @treturn integer the count
function M.waiting()
  local n = 0
  for _ in pairs(conds) do n = n + 1 end
  return n
end

M.install()
return M
