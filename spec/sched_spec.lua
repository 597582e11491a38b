-- Waiting for another coroutine's computation through a scheduler:
-- parked once on a token, woken when the owner ends.
local cr = require "cache_resource"
local support = require "support"
local tiny = require "tiny_scheduler"

-- A cached function whose computation takes `steps` scheduler turns.
local function slow_builder(steps, runs)
  return cr(function(k)
    runs.n = runs.n + 1
    for _ = 1, steps do coroutine.yield() end
    return { k = k, run = runs.n }
  end)
end

describe("set_scheduler", function()
  before_each(support.reset)

  it("accepts wait + wake, spawn alone, all three, and nil; returns the previous one", function()
    local s = tiny.new()
    local all = s.functions()
    assert.is_nil(cr.set_scheduler(all))
    assert.equal(all, cr.scheduler())
    local spawn_only = { spawn = s.spawn }
    assert.equal(all, cr.set_scheduler(spawn_only))
    assert.equal(spawn_only, cr.set_scheduler(s.functions("wait", "wake")))
    cr.set_scheduler(nil)
    assert.is_nil(cr.scheduler())
  end)

  it("rejects a bad scheduler with an error naming the field", function()
    local function err_of(v)
      local ok, err = pcall(cr.set_scheduler, v)
      assert.is_false(ok)
      return err
    end
    local f = function() end
    assert.matches("a table { wait = fn, wake = fn, spawn = fn } or nil expected, got number", err_of(5))
    assert.matches("field 'wake' is missing", err_of { wait = f })
    assert.matches("field 'wait' is missing", err_of { wake = f, spawn = f })
    assert.matches("field 'wait' must be a function, got number", err_of { wait = 1, wake = f })
    assert.matches("field 'spawn' must be a function, got string", err_of { spawn = "go" })
    assert.matches("field 'wait' is missing", err_of { wiat = f, wake = f })
    assert.matches("field 'spawn' must be a function, got table", err_of { spawn = {} })
    assert.is_nil(cr.scheduler())  -- nothing was installed by the failed calls
  end)

  it("takes a scheduler object as it is: its other fields are its own, methods through __index count", function()
    local s = tiny.new()
    local Scheduler = { __index = s.functions() }
    local object = setmetatable({ name = "loop", queue = {}, [1] = "slot", run = function() end }, Scheduler)
    assert.is_nil(cr.set_scheduler(object))
    assert.equal(object, cr.scheduler())
    local runs = { n = 0 }
    local f = slow_builder(2, runs)
    s.go(f, "k"); s.go(f, "k")
    assert.equal(0, s.run())
    assert.equal(1, runs.n)
    assert.equal(1, s.waits)
    local callable = setmetatable({}, { __call = function(_, fn) return s.spawn(fn) end })
    assert.equal(object, cr.set_scheduler({ spawn = callable, extra = true }))
  end)

  it("reads the functions when set: later edits of the table change nothing", function()
    local s = tiny.new()
    local t = s.functions()
    cr.set_scheduler(t)
    t.wait = function() error("edited") end
    local runs = { n = 0 }
    local f = slow_builder(2, runs)
    s.go(f, "k"); s.go(f, "k")
    assert.equal(0, s.run())
    assert.equal(1, s.waits)
  end)
end)

describe("waiting through a scheduler", function()
  before_each(support.reset)

  it("each waiter parks once and is woken once, when the owner finishes", function()
    local s = tiny.new()
    cr.set_scheduler(s.functions())
    local runs = { n = 0 }
    local f = slow_builder(50, runs)
    local tasks = {}
    for i = 1, 10 do tasks[i] = s.go(f, "shared") end
    assert.equal(0, s.run())
    assert.equal(1, runs.n)
    assert.equal(9, s.waits)   -- not one call per turn of the owner
    assert.equal(1, s.wakes)
    for i = 1, 10 do
      assert.is_true(tasks[i].result[1])
      assert.equal(tasks[1].result[2], tasks[i].result[2])
    end
    local st = cr.stats(f)
    assert.equal(1, st.misses)
    assert.equal(9, st.hits)
  end)

  it("uses tokens made by the module, one per owner", function()
    local tokens = {}
    local s = tiny.new()
    local wait = s.wait
    s.wait = function(token) tokens[#tokens + 1] = token; return wait(token) end
    cr.set_scheduler(s.functions())
    local runs = { n = 0 }
    local f = slow_builder(3, runs)
    s.go(f, "a"); s.go(f, "a"); s.go(f, "b"); s.go(f, "b")
    assert.equal(0, s.run())
    assert.equal(2, #tokens)                  -- one waiter per key
    assert.are_not.equal(tokens[1], tokens[2]) -- two owners, two tokens
  end)

  it("a wait that returns early makes the module look again and wait again", function()
    local s = tiny.new()
    local early = 0
    local wait = s.wait
    s.wait = function(token)
      if early < 3 then early = early + 1; return end   -- spurious wake-ups
      return wait(token)
    end
    local runs = { n = 0 }
    local f = slow_builder(5, runs)
    cr.set_scheduler(s.functions())
    local a, b = s.go(f, "k"), s.go(f, "k")
    assert.equal(0, s.run())
    assert.equal(1, runs.n)
    assert.equal(a.result[2], b.result[2])
  end)

  it("wakes the waiters when the owner raises; one takes over at a time", function()
    local s = tiny.new()
    cr.set_scheduler(s.functions())
    local runs = 0
    local f = cr(function()
      runs = runs + 1
      local mine = runs
      coroutine.yield()
      if mine == 1 then error("owner failed", 0) end
      return { mine }
    end)
    local tasks = {}
    for i = 1, 5 do tasks[i] = s.go(f) end
    assert.equal(0, s.run())
    assert.equal(2, runs)
    assert.same({ false, "owner failed", n = 2 }, tasks[1].result)
    for i = 2, 5 do assert.equal(tasks[2].result[2], tasks[i].result[2]) end
    assert.equal(2, s.wakes)  -- the failed owner, then the one that took over
  end)

  support.it_needs("coroutine.close", "wakes the waiters at once when the owner's coroutine is closed", function()
    local s = tiny.new()
    cr.set_scheduler(s.functions())
    local runs = 0
    local f = cr(function() runs = runs + 1; coroutine.yield(); return runs end)
    local owner = coroutine.create(f)
    coroutine.resume(owner)            -- computing, suspended
    local waiter = s.go(f)
    s.run()
    assert.equal(1, s.waits)
    assert.is_nil(waiter.result)       -- parked
    coroutine.close(owner)             -- no garbage collection needed
    assert.equal(1, s.wakes)
    assert.equal(0, s.run())
    assert.same({ true, 2, n = 2 }, waiter.result)
  end)

  it("wakes the waiters when the owner's coroutine is collected", function()
    local s = tiny.new()
    cr.set_scheduler(s.functions())
    local runs = 0
    local f = cr(function() runs = runs + 1; coroutine.yield(); return runs end)
    do
      local owner = coroutine.create(f)
      coroutine.resume(owner)
    end
    local waiter = s.go(f)
    s.run()
    assert.is_nil(waiter.result)
    collectgarbage(); collectgarbage()
    assert.equal(1, s.wakes)
    assert.equal(0, s.run())
    assert.same({ true, 2, n = 2 }, waiter.result)
  end)

  it("is used instead of a polling waiter when both are set", function()
    local polls = 0
    cr.set_waiter(function() polls = polls + 1; coroutine.yield() end)
    local s = tiny.new()
    cr.set_scheduler(s.functions())
    local runs = { n = 0 }
    local f = slow_builder(10, runs)
    for _ = 1, 3 do s.go(f, 1) end
    assert.equal(0, s.run())
    assert.equal(0, polls)
    assert.equal(2, s.waits)
  end)

  it("a scheduler with spawn only leaves waiting to the polling waiter", function()
    local polls = 0
    cr.set_waiter(function() polls = polls + 1; coroutine.yield() end)
    local s = tiny.new()
    cr.set_scheduler(s.functions("spawn"))
    local runs = { n = 0 }
    local f = slow_builder(3, runs)
    s.go(f, 1); s.go(f, 1)
    assert.equal(0, s.run())
    assert.equal(1, runs.n)
    assert.is_true(polls > 0)
  end)

  it("without a scheduler or waiter, the error names both ways to wait", function()
    local f = cr(function() coroutine.yield(); return 1 end)
    local owner = coroutine.create(f)
    coroutine.resume(owner)
    local ok, err = pcall(f)
    assert.is_false(ok)
    assert.matches("being computed by another coroutine", err)
    assert.matches("set_scheduler", err)
    assert.matches("set_waiter", err)
    assert.is_true(coroutine.resume(owner))
  end)

  it("still reports a recursive call instead of waiting on itself", function()
    local s = tiny.new()
    cr.set_scheduler(s.functions())
    local f
    f = cr(function(k) return f(k) end)
    local t = s.go(f, 1)
    assert.equal(0, s.run())
    assert.is_false(t.result[1])
    assert.matches("recursive call", t.result[2])
    assert.equal(0, s.waits)
  end)

  it("reports an error raised by wake with warn() and keeps the owner's result", function()
    local s = tiny.new()
    local t = s.functions()
    local wake = t.wake
    t.wake = function(token) wake(token); error("wake broke") end
    cr.set_scheduler(t)
    local runs = { n = 0 }
    local f = slow_builder(2, runs)
    local a, b
    local seen = support.capture_warnings(function()
      a, b = s.go(f, 1), s.go(f, 1)
      assert.equal(0, s.run())
    end)
    assert.is_true(a.result[1])
    assert.equal(a.result[2], b.result[2])
    assert.equal(1, #seen)
    assert.matches("wake raised an error: .*wake broke", seen[1])
  end)

  it("a clear while coroutines wait: the owner's values reach its caller only, waiters recompute", function()
    local s = tiny.new()
    cr.set_scheduler(s.functions())
    local runs = { n = 0 }
    local f = slow_builder(5, runs)
    local a = s.go(f, "k")
    local b = s.go(f, "k")
    s.step(); s.step()          -- a computes, b parks
    cr.clear(f)
    assert.equal(0, s.run())
    assert.equal(2, runs.n)
    assert.are_not.equal(a.result[2], b.result[2])
    assert.equal(b.result[2], f("k"))
  end)
end)
