-- A tiny deterministic coroutine scheduler for the specs: a run queue of
-- coroutines, wait/wake on tokens, spawn. It counts what the module asks
-- of it, so specs can assert "parked once, woken once".
local PARK = setmetatable({}, { __name = "tiny_scheduler.park" })

local M = {}

function M.new()
  local s = { queue = {}, parked = {}, waits = 0, wakes = 0, spawned = 0, tasks = {} }

  local function enqueue(co) s.queue[#s.queue + 1] = co end

  -- The functions given to cache_resource.set_scheduler.
  function s.wait(token)
    local co = coroutine.running()
    s.waits = s.waits + 1
    local list = s.parked[token]
    if not list then
      list = {}
      s.parked[token] = list
    end
    list[#list + 1] = co
    coroutine.yield(PARK)
  end

  function s.wake(token)
    s.wakes = s.wakes + 1
    local list = s.parked[token]
    s.parked[token] = nil
    for _, co in ipairs(list or {}) do enqueue(co) end
  end

  function s.spawn(fn)
    s.spawned = s.spawned + 1
    enqueue(coroutine.create(fn))
  end

  -- What to give set_scheduler (subsets: s:functions("wait", "wake")).
  function s.functions(...)
    local names = select("#", ...) > 0 and { ... } or { "wait", "wake", "spawn" }
    local t = {}
    for _, k in ipairs(names) do t[k] = s[k] end
    return t
  end

  -- A task: fn(...) in a new coroutine; its results land in task.result
  -- (table.pack of coroutine.resume's results) when it ends.
  function s.go(fn, ...)
    local args = table.pack(...)
    local task = {}
    task.co = coroutine.create(function() return fn(table.unpack(args, 1, args.n)) end)
    s.tasks[task.co] = task
    enqueue(task.co)
    return task
  end

  -- Runs until the queue is empty. A coroutine that yields anything but
  -- PARK (a cached function doing "I/O") goes to the back of the queue.
  -- Returns the number of coroutines still parked (0: nothing stuck).
  function s.run(limit)
    limit = limit or 100000
    local steps = 0
    while #s.queue > 0 do
      steps = steps + 1
      assert(steps <= limit, "tiny scheduler: too many steps")
      local co = table.remove(s.queue, 1)
      local r = table.pack(coroutine.resume(co))
      if coroutine.status(co) == "dead" then
        local task = s.tasks[co]
        if task then task.result = r end
        if not r[1] and not task then error("a spawned coroutine failed: " .. tostring(r[2]), 0) end
      elseif r[2] ~= PARK then
        enqueue(co)
      end
    end
    local stuck = 0
    for _, list in pairs(s.parked) do stuck = stuck + #list end
    return stuck
  end

  -- Runs one queued coroutine one step (for interleavings).
  function s.step()
    local co = table.remove(s.queue, 1)
    if not co then return false end
    local r = table.pack(coroutine.resume(co))
    if coroutine.status(co) == "dead" then
      local task = s.tasks[co]
      if task then task.result = r end
    elseif r[2] ~= PARK then
      enqueue(co)
    end
    return true
  end

  return s
end

return M
