-- Stale entries: stale-while-revalidate (refresh_mode = "background") and
-- stale-if-error (max_stale), with time driven by set_clock.
local cr = require "cache_resource"
local support = require "support"
local tiny = require "tiny_scheduler"

-- A versioned resource: every run builds version n+1. Each one is its own
-- cache (a name of its own), so statistics start at zero.
local made = 0
local function versioned(opts, body)
  local state = { runs = 0, released = {} }
  opts = opts or {}
  made = made + 1
  opts.name = opts.name or ("versioned #" .. made)
  opts.on_release = opts.on_release or function(v) state.released[#state.released + 1] = v end
  state.f = cr(function(k)
    state.runs = state.runs + 1
    local v = { k = k, version = state.runs }
    if body then return body(v, state) end
    return v
  end, opts)
  return state
end

describe("options refresh_mode and max_stale", function()
  before_each(support.reset)

  local function err_of(opts)
    local ok, err = pcall(cr, function() end, opts)
    assert.is_false(ok)
    return err
  end

  it("background needs a ttl > 0: the error names both options", function()
    for _, opts in ipairs({ { refresh_mode = "background" }, { refresh_mode = "background", ttl = 0 } }) do
      local err = err_of(opts)
      assert.matches("refresh_mode", err)
      assert.matches("'ttl' > 0", err)
    end
  end)

  it("rejects bad values naming the option and what it got", function()
    assert.matches("option 'refresh_mode' must be \"foreground\" or \"background\", got a string \"later\"",
      err_of { refresh_mode = "later" })
    assert.matches("option 'refresh_mode' must be .*got a boolean", err_of { refresh_mode = true })
    assert.matches("option 'max_stale' must be a number of seconds or a duration string", err_of { max_stale = {} })
    assert.matches("option 'max_stale' must be >= 0 seconds", err_of { max_stale = -5 })
    assert.matches("option 'max_stale': cannot read the duration 'soon'", err_of { max_stale = "soon" })
    assert.matches("did you mean 'refresh_mode'", err_of { refresh_mod = "background" })
  end)

  it("stats show the mode; info shows durations in seconds", function()
    local f = cr(function() end, { ttl = "1m", refresh_mode = "background", max_stale = "2h" })
    local g = cr(function() end, { ttl = 5 })
    assert.equal("background", cr.stats(f).refresh_mode)
    assert.equal("foreground", cr.stats(g).refresh_mode)
    local o = cr.info(f).options
    assert.equal(60, o.ttl)
    assert.equal(7200, o.max_stale)
    assert.equal("background", o.refresh_mode)
  end)

  it("max_stale defaults to the ttl in the background mode, 0 in the foreground mode", function()
    local clock = support.fake_clock(0)
    local bg = versioned { ttl = 10, refresh_mode = "background" }
    local fg = versioned { ttl = 10 }
    bg.f(1); fg.f(1)
    clock.now = 15
    assert.equal(-5, (cr.peek(bg.f, 1)))   -- stale, still there
    assert.is_nil(cr.peek(fg.f, 1))        -- gone at the ttl
    assert.equal(1, cr.expire())
    clock.now = 20
    assert.equal(1, cr.expire())
    assert.is_nil(cr.peek(bg.f, 1))
    assert.equal(1, cr.stats(bg.f).expirations)
  end)
end)

describe("stale-while-revalidate (refresh_mode = \"background\")", function()
  local s, clock
  before_each(function()
    support.reset()
    s = tiny.new()
    cr.set_scheduler(s.functions())
    clock = support.fake_clock(1000)
  end)

  it("serves stale values at once and refreshes the key once, in the background", function()
    local r = versioned { ttl = 10, refresh_mode = "background" }
    local v1 = r.f("k")
    clock.now = 1012
    local seen = {}
    for i = 1, 3 do seen[i] = r.f("k") end     -- three stale hits before the refresh runs
    for i = 1, 3 do assert.equal(v1, seen[i]) end
    assert.equal(1, s.spawned)
    assert.equal(1, r.runs)
    assert.equal(0, s.run())
    assert.equal(2, r.runs)
    local v2 = r.f("k")
    assert.equal(2, v2.version)
    assert.equal(v2, r.f("k"))
    assert.same({ v1 }, r.released)            -- the old values got on_release
    local st = cr.stats(r.f)
    assert.equal(3, st.stale_hits)
    assert.equal(1, st.refreshes)
    assert.equal(1, st.misses)
    assert.equal(2, st.hits)
    assert.equal(0, st.refresh_failures)
    assert.equal(1, st.entries)
  end)

  it("a fresh hit neither refreshes nor counts as stale", function()
    local r = versioned { ttl = 10, refresh_mode = "background" }
    r.f(1)
    clock.now = 1009.9
    r.f(1)
    assert.equal(0, s.spawned)
    assert.equal(0, cr.stats(r.f).stale_hits)
  end)

  it("replays a stale entry's UI calls and shows no spinner", function()
    local shown, spinners = {}, 0
    cr.set_spinner(function(event) if event == "start" then spinners = spinners + 1 end end)
    local text = cr.replayable(function(x) shown[#shown + 1] = x end, "refresh.text")
    local r = versioned({ ttl = 10, refresh_mode = "background" }, function(v)
      text("version " .. v.version)
      return v
    end)
    r.f(1)
    assert.equal(1, spinners)
    shown = {}
    clock.now = 1011
    r.f(1)
    assert.same({ "version 1" }, shown)
    assert.equal(1, spinners)
    cr.set_spinner(nil)
  end)

  it("records the refresh's UI calls into the new entry without showing them live", function()
    local shown = {}
    local text = cr.replayable(function(x) shown[#shown + 1] = x end, "refresh.live")
    local r = versioned({ ttl = 10, refresh_mode = "background" }, function(v)
      text("version " .. v.version)
      return v
    end)
    r.f(1)
    clock.now = 1011
    r.f(1)
    shown = {}
    assert.equal(0, s.run())     -- the refresh runs: nothing shown
    assert.equal(2, r.runs)
    assert.same({}, shown)
    r.f(1)                       -- a hit on the new entry replays its calls
    assert.same({ "version 2" }, shown)
  end)

  it("runs validate on stale hits; a stale entry failing it is dropped and recomputed", function()
    local valid = true
    local r = versioned { ttl = 10, refresh_mode = "background", validate = function() return valid end }
    r.f(1)
    clock.now = 1011
    valid = false
    local v = r.f(1)
    assert.equal(2, v.version)     -- a foreground miss, no refresh
    assert.equal(0, s.spawned)
    assert.same({}, r.released)    -- dropped by validate: no on_release
    valid = true
    clock.now = 1022
    assert.equal(v, r.f(1))        -- stale again, validated, served
    assert.equal(1, s.spawned)
  end)

  it("a refresh cleared before it started does not run fn; the next call misses", function()
    local r = versioned { ttl = 10, refresh_mode = "background" }
    r.f("k")
    clock.now = 1011
    r.f("k")                       -- spawns the refresh
    cr.clear(r.f, "k")
    local t = s.go(r.f, "k")       -- queued after the refresh
    assert.equal(0, s.run())
    assert.is_true(t.result[1])
    assert.equal(2, t.result[2].version)
    assert.equal(2, r.runs)        -- the first run and the miss: the refresh never ran fn
    assert.equal(0, s.waits)
  end)

  it("a stale hit while another coroutine refreshes in the foreground gets stale values, no refresh", function()
    cr.set_scheduler(s.functions("wait", "wake"))  -- no spawn: the first stale call refreshes itself
    local r = versioned({ ttl = 10, refresh_mode = "background" }, function(v)
      if v.version == 2 then coroutine.yield() end
      return v
    end)
    local v1 = r.f(1)
    clock.now = 1011
    local a = s.go(r.f, 1)
    local b = s.go(r.f, 1)
    assert.equal(0, s.run())
    assert.equal(2, a.result[2].version)
    assert.equal(v1, b.result[2])  -- did not wait, did not refresh
    assert.equal(0, s.waits)
    assert.equal(2, r.runs)
    local st = cr.stats(r.f)
    assert.equal(1, st.refreshes)
    assert.equal(1, st.stale_hits)
  end)

  it("a miss while a refresh is pending waits for it (entry evicted meanwhile)", function()
    local r = versioned { ttl = 10, refresh_mode = "background", max_entries = 1 }
    r.f("a")
    clock.now = 1011
    local t = s.go(r.f, "a")        -- queued first: runs before the refresh starts
    r.f("a")                        -- refresh of "a" spawned
    r.f("b")                        -- evicts the stale "a"
    assert.equal(0, s.run())        -- the miss of "a" finds the pending refresh as owner and waits
    assert.equal(3, r.runs)         -- a, b, and the refresh: the miss did not compute
    assert.equal(3, t.result[2].version)
    assert.equal(1, s.waits)
    assert.equal(t.result[2], r.f("a"))  -- the refresh stored its values
  end)

  it("a refresh that raises keeps the stale entry, warns, and waits min(ttl, 60 s) before the next", function()
    local fail = true
    local r = versioned({ ttl = 10, refresh_mode = "background", max_stale = 1000 }, function(v)
      if v.version > 1 and fail then error("backend down", 0) end
      return v
    end)
    local v1 = r.f(1)
    clock.now = 1011
    local seen = support.capture_warnings(function()
      assert.equal(v1, r.f(1))
      assert.equal(0, s.run())
    end)
    assert.equal(1, #seen)
    assert.matches("background refresh of .* failed: backend down", seen[1])
    assert.equal(v1, r.f(1))          -- still stale, no new refresh yet
    assert.equal(1, s.spawned)
    clock.now = 1011 + 9.9
    r.f(1)
    assert.equal(1, s.spawned)
    clock.now = 1011 + 10.1           -- min(ttl, 60) = 10 s later
    fail = false
    r.f(1)
    assert.equal(2, s.spawned)
    assert.equal(0, s.run())
    assert.equal(3, r.f(1).version)
    local st = cr.stats(r.f)
    assert.equal(1, st.refresh_failures)
    assert.equal(2, st.refreshes)
    assert.equal(0, st.failures)
  end)

  it("the retry delay is at most 60 s", function()
    local fail = true
    local r = versioned({ ttl = 600, refresh_mode = "background" }, function(v)
      if v.version > 1 and fail then return nil, "down" end
      return v
    end)
    r.f(1)
    clock.now = 1601
    support.capture_warnings(function() r.f(1); s.run() end)
    clock.now = 1660
    r.f(1)
    assert.equal(1, s.spawned)
    clock.now = 1661.5
    r.f(1)
    assert.equal(2, s.spawned)
  end)

  it("a refresh returning a failure (nil, err) keeps the stale entry", function()
    local r = versioned({ ttl = 10, refresh_mode = "background" }, function(v)
      if v.version > 1 then return nil, "timeout" end
      return v
    end)
    local v1 = r.f(1)
    clock.now = 1011
    local seen = support.capture_warnings(function() r.f(1); s.run() end)
    assert.matches("failed: timeout", seen[1])
    assert.equal(v1, r.f(1))
    assert.equal(1, cr.stats(r.f).refresh_failures)
    assert.same({}, r.released)
  end)

  it("a refresh may yield: other calls keep getting the stale values meanwhile", function()
    local r = versioned({ ttl = 10, refresh_mode = "background" }, function(v)
      if v.version > 1 then for _ = 1, 5 do coroutine.yield() end end
      return v
    end)
    local v1 = r.f(1)
    clock.now = 1011
    r.f(1)
    local during = {}
    for i = 1, 3 do
      s.step()                      -- the refresh advances, then yields again
      during[i] = r.f(1)
    end
    assert.equal(0, s.run())
    for i = 1, 3 do assert.equal(v1, during[i]) end
    assert.equal(1, s.spawned)
    assert.equal(2, r.f(1).version)
  end)

  it("a clear during a refresh: the refreshed values are not stored", function()
    local r = versioned({ ttl = 10, refresh_mode = "background" }, function(v)
      if v.version == 2 then coroutine.yield() end
      return v
    end)
    r.f(1)
    clock.now = 1011
    r.f(1)
    s.step()                        -- the refresh runs fn, which yields
    assert.equal(2, r.runs)
    cr.clear(r.f)
    assert.equal(0, s.run())
    assert.equal(0, cr.stats(r.f).entries)
    assert.equal(3, r.f(1).version) -- a plain miss
  end)

  it("a session ending during a refresh: nothing is stored, nothing leaks", function()
    local refs0 = cr.live_refs()
    cr.set_session("alice")
    local r = versioned({ ttl = 10, refresh_mode = "background", scope = "session" }, function(v)
      if v.version > 1 then coroutine.yield() end
      return v
    end)
    r.f(1)
    clock.now = 1011
    r.f(1)
    s.step()
    cr.end_session("alice")
    assert.equal(0, s.run())
    assert.equal(0, cr.stats(r.f).entries)
    collectgarbage(); collectgarbage()
    assert.equal(refs0, cr.live_refs())
  end)

  it("peek shows a negative remaining lifetime while stale and starts no refresh", function()
    local r = versioned { ttl = 10, refresh_mode = "background", max_stale = 5 }
    local v = r.f(1)
    clock.now = 1012
    local left, got = cr.peek(r.f, 1)
    assert.equal(-2, left)
    assert.equal(v, got)
    assert.equal(0, s.spawned)
    assert.equal(0, cr.stats(r.f).stale_hits)
    clock.now = 1015
    assert.is_nil(cr.peek(r.f, 1))
  end)

  it("releases entries at ttl + max_stale, ordered by that time", function()
    local r = versioned { ttl = 10, refresh_mode = "background", max_stale = 100 }
    local q = versioned { ttl = 50 }
    r.f(1); q.f(1)
    clock.now = 1060
    assert.equal(1, cr.expire())   -- q at 1050; r lives until 1110
    assert.equal(1, cr.stats(r.f).entries)
    clock.now = 1110
    assert.equal(1, cr.expire())
    assert.equal(1, #r.released)
  end)

  it("without spawn, the stale call refreshes in the foreground and returns the new values", function()
    cr.set_scheduler(s.functions("wait", "wake"))
    local r = versioned { ttl = 10, refresh_mode = "background" }
    r.f(1)
    clock.now = 1011
    assert.equal(2, r.f(1).version)
    assert.equal(1, cr.stats(r.f).refreshes)
    cr.set_scheduler(nil)
    clock.now = 1022
    assert.equal(3, r.f(1).version)
    assert.equal(2, cr.stats(r.f).refreshes)
    assert.equal(1, cr.stats(r.f).misses)
  end)

  it("without a scheduler, a failed foreground refresh returns the stale values and warns", function()
    cr.set_scheduler(nil)
    local r = versioned({ ttl = 10, refresh_mode = "background" }, function(v)
      if v.version > 1 then error("nope", 0) end
      return v
    end)
    local v1 = r.f(1)
    clock.now = 1011
    local got
    local seen = support.capture_warnings(function() got = r.f(1) end)
    assert.equal(v1, got)
    assert.equal(1, #seen)
    assert.matches("nope", seen[1])
    r.f(1)                         -- within the retry delay: stale, no new attempt
    assert.equal(2, r.runs)
    local st = cr.stats(r.f)
    assert.equal(1, st.refresh_failures)
    assert.equal(2, st.stale_hits)
  end)

  it("a spawn that raises is reported and the refresh runs in the foreground", function()
    local t = s.functions()
    t.spawn = function() error("no loop running") end
    cr.set_scheduler(t)
    local r = versioned { ttl = 10, refresh_mode = "background" }
    r.f(1)
    clock.now = 1011
    local got
    local seen = support.capture_warnings(function() got = r.f(1) end)
    assert.equal(2, got.version)
    assert.matches("spawn raised an error %(.*no loop running%)", seen[1])
  end)

  it("a spawn that runs the refresh at once: the call gets the refreshed values", function()
    cr.set_scheduler { spawn = function(fn) fn() end }
    local shown = {}
    local text = cr.replayable(function(x) shown[#shown + 1] = x end, "refresh.sync")
    local r = versioned({ ttl = 10, refresh_mode = "background" }, function(v)
      text("version " .. v.version)
      return v
    end)
    r.f(1)
    clock.now = 1011
    shown = {}
    assert.equal(2, r.f(1).version)
    assert.same({ "version 2" }, shown)  -- replayed by the hit on the new entry, not shown live
    local st = cr.stats(r.f)
    assert.equal(1, st.refreshes)
    assert.equal(0, st.stale_hits)
  end)

  it("a refresh the scheduler drops unrun: the key computes again after collection", function()
    local dropped = {}
    local t = s.functions()
    t.spawn = function(fn) dropped[#dropped + 1] = fn end
    cr.set_scheduler(t)
    local r = versioned { ttl = 10, refresh_mode = "background", max_entries = 1 }
    r.f("a")
    clock.now = 1011
    r.f("a")
    assert.equal(1, #dropped)
    dropped = {}
    r.f("b")                         -- evicts "a"
    collectgarbage(); collectgarbage()
    local task = s.go(r.f, "a")      -- nobody owns "a" any more: a plain miss
    assert.equal(0, s.run())
    assert.is_true(task.result[1])
    assert.equal(0, s.waits)
  end)

  it("refresh cycles return registry references to their baseline", function()
    local text = cr.replayable(function() end, "refresh.leak.text")
    local r = versioned({ ttl = 1, refresh_mode = "background", max_entries = 5 }, function(v)
      text({ v = v.version }, setmetatable({}, {}))
      if v.version % 3 == 0 then coroutine.yield() end
      if v.version % 5 == 0 then error("planned") end
      if v.version % 7 == 0 then return nil, "planned failure" end
      return v
    end)
    r.f(0); cr.clear(); collectgarbage(); collectgarbage()
    local refs0 = cr.live_refs()
    support.capture_warnings(function()
      for i = 1, 2000 do
        pcall(r.f, i % 8)
        if i % 4 == 0 then s.run() end
        if i % 50 == 0 then clock.now = clock.now + 1.5 end
        if i % 500 == 0 then cr.clear(r.f) end
      end
      s.run()
    end)
    cr.clear()
    collectgarbage(); collectgarbage()
    assert.equal(refs0, cr.live_refs())
    assert.is_true(cr.stats(r.f).refreshes > 0)
  end)
end)

describe("stale-if-error (max_stale in the foreground mode)", function()
  local clock
  before_each(function()
    support.reset()
    clock = support.fake_clock(0)
  end)

  it("serves the stale values with a warning when recomputing an expired entry fails", function()
    local fail = false
    local r = versioned({ ttl = 10, max_stale = 60 }, function(v)
      if fail then error("db down", 0) end
      return v
    end)
    local v1 = r.f(1)
    clock.now = 11
    fail = true
    local got
    local seen = support.capture_warnings(function() got = r.f(1) end)
    assert.equal(v1, got)
    assert.equal(1, #seen)
    assert.matches("recomputing an expired entry of .* failed: db down; serving its stale values", seen[1])
    fail = false
    local v3 = r.f(1)                  -- each call past the ttl tries again
    assert.equal(3, v3.version)
    assert.same({ v1 }, r.released)
    local st = cr.stats(r.f)
    assert.equal(1, st.failures)
    assert.equal(1, st.stale_hits)
    assert.equal(3, st.misses)
  end)

  it("also on a failure result, which is then not stored", function()
    local fail = false
    local r = versioned({ ttl = 10, max_stale = 60, failure_ttl = 30 }, function(v)
      if fail then return nil, "timeout" end
      return v
    end)
    local v1 = r.f(1)
    clock.now = 11
    fail = true
    local got
    support.capture_warnings(function() got = r.f(1) end)
    assert.equal(v1, got)
    assert.equal(v1, select(2, cr.peek(r.f, 1)))
  end)

  it("past ttl + max_stale the entry is released and the error propagates", function()
    local fail = false
    local r = versioned({ ttl = 10, max_stale = 5 }, function(v)
      if fail then error("db down", 0) end
      return v
    end)
    local v1 = r.f(1)
    clock.now = 15
    fail = true
    local ok, err = pcall(r.f, 1)
    assert.is_false(ok)
    assert.equal("db down", err)
    assert.same({ v1 }, r.released)
    assert.equal(1, cr.stats(r.f).expirations)
  end)

  it("waiters: one coroutine recomputes, the others wait for it", function()
    local s = tiny.new()
    cr.set_scheduler(s.functions())
    local r = versioned({ ttl = 10, max_stale = 60 }, function(v)
      if v.version > 1 then coroutine.yield() end
      return v
    end)
    r.f(1)
    clock.now = 11
    local tasks = {}
    for i = 1, 4 do tasks[i] = s.go(r.f, 1) end
    assert.equal(0, s.run())
    assert.equal(2, r.runs)
    for i = 1, 4 do assert.equal(2, tasks[i].result[2].version) end
  end)
end)
