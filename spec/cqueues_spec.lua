-- The cqueues scheduler: require "cache_resource.cqueues".
local cr = require "cache_resource"
local support = require "support"

local ok_cq, cqueues = pcall(require, "cqueues")
local condition = ok_cq and require "cqueues.condition"

describe("cache_resource.cqueues", function()
  local adapter
  before_each(function()
    support.reset()
    assert.is_true(ok_cq, "lua-cqueues for Lua 5.4 is required (make deps)")
    adapter = require "cache_resource.cqueues"
    adapter.install()
  end)
  after_each(function() cr.set_scheduler(nil) end)

  -- The adapter's scheduler, counting what the module asks of it.
  local function counted()
    local n = { wait = 0, wake = 0, spawn = 0 }
    local a = adapter.scheduler
    cr.set_scheduler {
      wait = function(t) n.wait = n.wait + 1; return a.wait(t) end,
      wake = function(t) n.wake = n.wake + 1; return a.wake(t) end,
      spawn = function(fn) n.spawn = n.spawn + 1; return a.spawn(fn) end,
    }
    return n
  end

  it("installs itself on require; uninstall and install toggle it", function()
    assert.equal(adapter.scheduler, cr.scheduler())
    adapter.uninstall()
    assert.is_nil(cr.scheduler())
    adapter.install()
    assert.equal(adapter.scheduler, cr.scheduler())
    local other = { spawn = function() end }
    cr.set_scheduler(other)
    adapter.uninstall()                 -- not ours any more: left alone
    assert.equal(other, cr.scheduler())
  end)

  it("twenty coroutines waiting on one build are each woken once", function()
    local n = counted()
    local gate = condition.new()
    local runs = 0
    local build = cr(function(name)
      runs = runs + 1
      gate:wait()                       -- the build is in progress until the gate opens
      return { name = name }
    end)
    local cq = cqueues.new()
    local got = {}
    for i = 1, 21 do cq:wrap(function() got[i] = build("model") end) end
    cq:wrap(function()
      while n.wait < 20 do cqueues.sleep(0) end  -- everyone has parked
      assert.equal(1, adapter.waiting())
      gate:signal()
    end)
    local ok, err = cq:loop(10)
    assert.is_true(ok, err)
    assert.equal(1, runs)
    assert.equal(20, n.wait)            -- once each: no polling
    assert.equal(1, n.wake)
    for i = 1, 21 do assert.equal(got[1], got[i]) end
    assert.equal(0, adapter.waiting())
  end)

  it("a waiter takes over when the owner raises", function()
    local n = counted()
    local gate = condition.new()
    local runs = 0
    local build = cr(function()
      runs = runs + 1
      if runs == 1 then gate:wait(); error("first build failed", 0) end
      return "second build"
    end)
    local cq = cqueues.new()
    local got = {}
    for i = 1, 5 do cq:wrap(function() got[i] = table.pack(pcall(build)) end) end
    cq:wrap(function()
      while n.wait < 4 do cqueues.sleep(0) end
      gate:signal()
    end)
    assert.is_true((cq:loop(10)))
    assert.equal(2, runs)
    local failed, built = 0, 0
    for i = 1, 5 do
      if got[i][1] then
        built = built + 1
        assert.equal("second build", got[i][2])
      else
        failed = failed + 1
        assert.equal("first build failed", got[i][2])
      end
    end
    assert.equal(1, failed)   -- the owner's caller gets its error
    assert.equal(4, built)    -- one waiter built again, three waited for it
  end)

  it("refreshes in the background while other coroutines keep being served", function()
    local n = counted()
    local clock = support.fake_clock(0)
    local gate = condition.new()
    local events = {}
    local runs = 0
    local f = cr(function()
      runs = runs + 1
      if runs > 1 then
        gate:wait()                     -- a slow rebuild
        events[#events + 1] = "refreshed"
      end
      return { version = runs }
    end, { ttl = 10, refresh_mode = "background" })
    local v1 = f()
    clock.now = 11
    local cq = cqueues.new()
    for _ = 1, 5 do
      cq:wrap(function()
        local v = f()
        events[#events + 1] = "served " .. v.version
      end)
    end
    cq:wrap(function()                  -- the rebuild ends once all five were served
      while #events < 5 or runs < 2 do cqueues.sleep(0) end
      gate:signal()
    end)
    assert.is_true((cq:loop(10)))
    assert.same({ "served 1", "served 1", "served 1", "served 1", "served 1", "refreshed" }, events)
    assert.equal(1, n.spawn)
    assert.equal(0, n.wait)
    assert.are_not.equal(v1, f())
    assert.equal(2, f().version)
    assert.equal(5, cr.stats(f).stale_hits)
  end)

  it("runs refreshes started outside a controller in the one given to install", function()
    local clock = support.fake_clock(0)
    local runs = 0
    local f = cr(function() runs = runs + 1; return runs end, { ttl = 10, refresh_mode = "background" })
    f()
    clock.now = 11
    local cq = cqueues.new()
    adapter.install(cq)
    assert.equal(1, f())               -- stale, refresh queued on cq
    assert.equal(1, runs)
    assert.is_true((cq:loop(5)))
    assert.equal(2, f())
  end)

  it("without a controller to spawn in, warns and refreshes in the foreground", function()
    local clock = support.fake_clock(0)
    local runs = 0
    local f = cr(function() runs = runs + 1; return runs end, { ttl = 10, refresh_mode = "background" })
    f()
    clock.now = 11
    local got
    local seen = support.capture_warnings(function() got = f() end)
    assert.equal(2, got)
    assert.matches("no cqueues controller is running", seen[1])
  end)
end)
