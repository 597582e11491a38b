-- Calls: hits, misses, errors, yields and waiting.
local cr = require "cache_resource"
local support = require "support"

-- Resumes every coroutine round-robin until all are dead; returns results.
local function drive(cos)
  local results, alive = {}, #cos
  local guard = 0
  while alive > 0 do
    guard = guard + 1
    assert(guard < 10000, "coroutines never finished")
    for i, co in ipairs(cos) do
      if coroutine.status(co) == "suspended" then
        local r = table.pack(coroutine.resume(co))
        if coroutine.status(co) == "dead" then
          results[i] = r
          alive = alive - 1
        end
      end
    end
  end
  return results
end

describe("calls", function()
  before_each(support.reset)

  it("returns every stored value, nils included, the same objects each time", function()
    local f = cr(function() return {}, nil, "x", nil end)
    local a = table.pack(f())
    local b = table.pack(f())
    assert.equal(4, a.n)
    assert.equal(4, b.n)
    assert.equal(a[1], b[1])
    assert.is_nil(b[2])
    assert.equal("x", b[3])
  end)

  it("caches nil and false results like any other", function()
    local runs = { n = 0 }
    local f = cr(function(x) runs.n = runs.n + 1; if x then return false end end)
    assert.equal(0, select("#", f()))
    assert.equal(0, select("#", f()))
    assert.is_false(f(1))
    assert.is_false(f(1))
    assert.equal(2, runs.n)
  end)

  it("passes all arguments to fn, skipped ones included", function()
    local f = cr(function(a, _b, ...) return { a, _b, ... } end)
    assert.same({ 1, "two", 3, 4 }, f(1, "two", 3, 4))
  end)

  it("propagates an error unchanged, stores nothing, and runs fn again next time", function()
    local runs = { n = 0 }
    local boom = { code = 42 }
    local f = cr(function() runs.n = runs.n + 1; if runs.n == 1 then error(boom) end; return "ok" end)
    local ok, err = pcall(f)
    assert.is_false(ok)
    assert.equal(boom, err)
    assert.equal("ok", f())
    assert.equal("ok", f())
    assert.equal(2, runs.n)
  end)

  it("keeps a string error message unchanged", function()
    local f = cr(function() error("plain failure", 0) end)
    local ok, err = pcall(f)
    assert.is_false(ok)
    assert.equal("plain failure", err)
  end)

  it("raises 'recursive call' for the same key from inside its own computation", function()
    local f
    f = cr(function(k)
      if k == "loop" then return f("loop") end
      if k == "outer" then return "outer+" .. f("inner") end
      return k
    end)
    local ok, err = pcall(function() local r = f("loop"); return r end)
    assert.is_false(ok)
    assert.matches("recursive call", err)
    assert.equal("outer+inner", f("outer"))
  end)

  it("raises 'recursive call' through a coroutine the computation resumes, instead of hanging", function()
    local f
    f = cr(function(k)
      local co = coroutine.wrap(function() return f(k) end)
      return co()
    end)
    cr.set_waiter(function() coroutine.yield() end)
    local ok, err = pcall(f, 1)
    assert.is_false(ok)
    assert.matches("recursive call", err)
  end)

  it("lets fn yield: a cached function driven by coroutine.wrap", function()
    local runs = { n = 0 }
    local f = cr(function(x)
      runs.n = runs.n + 1
      local got = coroutine.yield("need input")
      return { x, got }
    end)
    local co = coroutine.wrap(function() return f(7) end)
    assert.equal("need input", co())
    local v = co("input")
    assert.same({ 7, "input" }, v)
    -- later calls hit without yielding
    assert.equal(v, coroutine.wrap(function() return f(7) end)())
    assert.equal(1, runs.n)
  end)

  it("a yielding fn that then fails stores nothing", function()
    local f = cr(function() coroutine.yield(); error("late failure", 0) end)
    local co = coroutine.create(function() return f() end)
    assert.is_true(coroutine.resume(co))
    local ok, err = coroutine.resume(co)
    assert.is_false(ok)
    assert.equal("late failure", err)
    assert.equal(0, support.stat("f").entries)
  end)

  it("five coroutines on one key with a waiter run fn once and share the value", function()
    local runs = { n = 0 }
    local f = cr(function(k)
      runs.n = runs.n + 1
      for _ = 1, 3 do coroutine.yield() end
      return { k }
    end)
    cr.set_waiter(function() coroutine.yield() end)
    local cos = {}
    for i = 1, 5 do cos[i] = coroutine.create(function() return f("shared") end) end
    local results = drive(cos)
    assert.equal(1, runs.n)
    for i = 1, 5 do
      assert.is_true(results[i][1])
      assert.equal(results[1][2], results[i][2])
    end
  end)

  it("a waiter that makes progress without yielding (it resumes the owner) works", function()
    local f = cr(function() coroutine.yield(); return { "from the owner" } end)
    local owner = coroutine.create(function() return f() end)
    coroutine.resume(owner)
    local waits = 0
    cr.set_waiter(function() waits = waits + 1; coroutine.resume(owner) end)
    local v = f() -- the main thread cannot yield; its waiter drives the owner instead
    assert.same({ "from the owner" }, v)
    assert.equal(1, waits)
  end)

  it("without a waiter, a second coroutine gets an error naming set_waiter", function()
    local f = cr(function() coroutine.yield(); return 1 end)
    local owner = coroutine.create(function() return f() end)
    coroutine.resume(owner)
    local ok, err = pcall(function() local r = f(); return r end)
    assert.is_false(ok)
    assert.matches("being computed by another coroutine", err)
    assert.matches("set_waiter", err)
    assert.is_true(coroutine.resume(owner))
  end)

  it("hands the key to a waiter when the owner fails", function()
    local runs = { n = 0 }
    local f = cr(function()
      runs.n = runs.n + 1
      local mine = runs.n
      coroutine.yield()
      if mine == 1 then error("owner failed", 0) end
      return { "from run " .. mine }
    end)
    cr.set_waiter(function() coroutine.yield() end)
    local cos = {}
    for i = 1, 5 do cos[i] = coroutine.create(function() return f() end) end
    local results = drive(cos)
    assert.equal(2, runs.n)
    assert.is_false(results[1][1])
    assert.equal("owner failed", results[1][2])
    for i = 2, 5 do
      assert.is_true(results[i][1])
      assert.equal(results[2][2], results[i][2])
      assert.same({ "from run 2" }, results[i][2])
    end
  end)

  support.it_needs("coroutine.close", "a waiter takes over when the owner coroutine was closed", function()
    local runs = { n = 0 }
    local f = cr(function() runs.n = runs.n + 1; coroutine.yield(); return runs.n end)
    cr.set_waiter(function() coroutine.yield() end)
    local owner = coroutine.create(function() return f() end)
    coroutine.resume(owner)
    coroutine.close(owner)
    local waiter = coroutine.create(function() return f() end)
    local results = drive({ waiter })
    assert.same({ true, 2, n = 2 }, results[1])
  end)

  it("counts a validate that raises as falsy: the entry is recomputed and the error reported with warn()",
    function()
      local runs, released = 0, 0
      local f = cr(function() runs = runs + 1; return { run = runs } end, {
        name = "pinged",
        validate = function(conn) if conn.run == 1 then error("connection closed", 0) end return true end,
        on_release = function() released = released + 1 end,
      })
      f()
      local seen = support.capture_warnings(function() assert.equal(2, f().run) end)
      assert.equal(1, #seen)
      assert.matches("validate of pinged raised an error (connection closed); the entry is dropped and recomputed",
        seen[1], 1, true)
      assert.equal(2, f().run) -- the new entry validates
      assert.equal(2, runs)
      assert.equal(0, released) -- dropped as on a falsy validate: without on_release
    end)

  it("counts a validate that raises after yielding as falsy too", function()
    local runs = 0
    local f = cr(function() runs = runs + 1; return runs end, {
      validate = function(v) coroutine.yield(); if v == 1 then error({ "not a string" }) end return true end,
    })
    local function drive_one()
      local co = coroutine.create(f)
      local ok, v = coroutine.resume(co)
      while coroutine.status(co) == "suspended" do ok, v = coroutine.resume(co) end
      return ok, v
    end
    assert.same({ true, 1 }, { drive_one() }) -- a miss: no validate
    local seen = support.capture_warnings(function() assert.same({ true, 2 }, { drive_one() }) end)
    assert.matches("(a table error value)", seen[1], 1, true)
  end)

  it("errors from the waiter propagate", function()
    local f = cr(function() coroutine.yield(); return 1 end)
    cr.set_waiter(function() error("waiter broke", 0) end)
    local owner = coroutine.create(f)
    coroutine.resume(owner)
    local ok, err = pcall(f)
    assert.is_false(ok)
    assert.equal("waiter broke", err)
    coroutine.resume(owner)
  end)

  it("uses a monotonic clock unless set_clock replaces it", function()
    local released = {}
    local f = cr(function() return {} end, { ttl = 0.05, on_release = function(v) released[#released + 1] = v end })
    local v = f()
    assert.equal(v, f())
    local deadline = os.clock() + 2
    while #released == 0 and os.clock() < deadline do f() end
    assert.equal(v, released[1])
  end)

  it("set_clock rejects a non-function", function()
    assert.has_error(function() cr.set_clock(5) end)
    assert.has_error(function() cr.set_waiter("x") end)
  end)

  it("reports a clock reading that is not a finite number, naming set_clock", function()
    local reading
    cr.set_clock(function() return reading end)
    local f = cr(function() return 1 end, { ttl = 5 })
    local cases = { { 0 / 0, "nan" }, { math.huge, "inf" }, { -math.huge, "-inf" }, { "noon", "a string" },
      { "12", "a string" }, { true, "a boolean" }, { nil, "a nil" } }
    for _, case in ipairs(cases) do
      reading = case[1]
      assert.has_error(function() f() end,
        "cache_resource: the clock set with set_clock must return a finite number of seconds, got " .. case[2])
    end
    reading = 10
    assert.equal(1, f())
    assert.equal(5, (cr.peek(f)))
  end)
end)

describe("a real scheduler: cqueues", function()
  local ok_cq, cqueues = pcall(require, "cqueues")
  local socket = ok_cq and require "cqueues.socket"
  before_each(support.reset)

  it("ten cqueues coroutines asking at once run a loopback-connecting fn once", function()
    assert.is_true(ok_cq, "lua-cqueues for Lua 5.4 is required (make deps)")
    local cq = cqueues.new()
    local server = socket.listen("127.0.0.1", 0)
    local _, _, port = server:localname()
    local accepted = { n = 0 }
    cq:wrap(function()
      local conn = server:accept()
      accepted.n = accepted.n + 1
      conn:write("hello from the server\n")
      conn:flush()
      cqueues.sleep(0.2)
      conn:close()
    end)
    local runs = { n = 0 }
    local connect = cr(function(port_)
      runs.n = runs.n + 1
      local conn = socket.connect("127.0.0.1", port_)
      local line = conn:read("*l")
      cqueues.sleep(0.05) -- still computing while the others arrive
      return { greeting = line, conn = conn }
    end)
    cr.set_waiter(function() cqueues.sleep(0.005) end)
    local got = {}
    for i = 1, 10 do
      cq:wrap(function() got[i] = connect(port) end)
    end
    local ok, err = cq:loop(5)
    assert.is_true(ok, err)
    assert.equal(1, runs.n)
    assert.equal(1, accepted.n)
    for i = 1, 10 do assert.equal(got[1], got[i]) end
    assert.equal("hello from the server", got[1].greeting)
    got[1].conn:close()
    server:close()
  end)
end)

-- A miss's call record goes back to a pool when its call is over and the
-- next miss reuses it: whatever the last call left in it must not reach
-- the next one, and a call that is still running must keep its own.
describe("call records reused between misses", function()
  before_each(support.reset)
  after_each(function() cr.set_widget_source(nil) end)

  it("a miss after a widget cache's miss is keyed by its arguments alone", function()
    local level = 1
    cr.set_widget_source(function() return level end)
    local widgets = cr(function(x) cr.widget_used("level", level); return { x, level } end,
      { experimental_allow_widgets = true, name = "widgets" })
    local runs = 0
    local plain = cr(function(x) runs = runs + 1; return { x } end, { name = "plain" })
    assert.same({ "a", 1 }, widgets("a"))
    local first = plain("b")          -- its record may be the one widgets used
    assert.equal(first, plain("b"))
    assert.equal(1, runs)
    assert.equal(1, support.stat("plain").hits)
  end)

  it("a coroutine that computed a miss can be collected afterwards", function()
    local f = cr(function(x) return { x } end)
    local gone = setmetatable({}, { __mode = "k" })
    local co = coroutine.create(function() return f("x") end)
    gone[co] = true
    assert.is_true((coroutine.resume(co)))
    co = nil -- luacheck: ignore 311
    collectgarbage(); collectgarbage()
    assert.is_nil(next(gone), "a finished computation kept its coroutine alive")
  end)

  it("nested misses, more than the pool holds, each get their own record", function()
    local depth = 20
    local f
    f = cr(function(n) if n == 0 then return { 0 } end; return { n, f(n - 1) } end, { name = "nested" })
    local v = f(depth)
    for n = depth, 1, -1 do
      assert.equal(n, v[1])
      v = v[2]
    end
    assert.same({ 0 }, v)
    assert.equal(depth + 1, support.stat("nested").misses)
    assert.equal(depth + 1, support.stat("nested").entries)
  end)

  -- Where nothing can yield (the main thread, or a coroutine inside a C
  -- call such as table.sort's comparator), a miss runs without a
  -- to-be-closed slot: what it leaves behind must be the same.
  it("misses where nothing can yield compute, store, and recover from errors like any other", function()
    local runs = 0
    local f = cr(function(x)
      runs = runs + 1
      if x == "raise" then error("boom") end
      return { x }
    end, { name = "not yieldable" })
    local co = coroutine.wrap(function()
      local t = { 3, 1, 2 }
      local seen = {}
      table.sort(t, function(a, b)
        seen[#seen + 1] = f(a)
        assert.is_false(pcall(f, "raise"))
        return a < b
      end)
      return t, seen
    end)
    local t, seen = co()
    assert.same({ 1, 2, 3 }, t)
    local keys = {}
    for _, v in ipairs(seen) do
      assert.equal(f(v[1]), v) -- stored: a hit from the main thread
      keys[v[1]] = true
    end
    local distinct = 0
    for _ in pairs(keys) do distinct = distinct + 1 end
    assert.equal(distinct + #seen, runs) -- each key once, and "raise" every time
    assert.equal(distinct, support.stat("not yieldable").entries)
    assert.is_false(pcall(f, "raise"))
    assert.equal(distinct + #seen + 1, runs)
  end)

  -- Such a miss keeps its record in C, linked only while fn runs: what
  -- reaches it through the list of calls in flight must still reach it.
  it("a miss where nothing can yield is seen while fn runs: a clear or end_session keeps its values out",
    function()
    local clear_now, released = false, {}
    local f
    f = cr(function(k)
      if clear_now then cr.clear(f) end
      return { k }
    end, { name = "cleared inside", on_release = function(v) released[#released + 1] = v end })
    clear_now = true
    local v = f("a")
    assert.same({ "a" }, v)
    assert.equal(0, support.stat("cleared inside").entries)
    clear_now = false
    local again = f("a")
    assert.are_not.equal(v, again) -- computed again, then stored
    assert.equal(again, f("a"))
    assert.same({}, released)

    local s = cr(function(k)
      cr.end_session("u1")
      return { k }
    end, { name = "session ended inside", scope = "session" })
    cr.set_session("u1")
    local sv = s("x")
    assert.same({ "x" }, sv)
    cr.set_session("u1")
    assert.are_not.equal(sv, s("x")) -- the ended session's store kept nothing
    cr.set_session(nil)
  end)

  it("a miss where nothing can yield counts a failure result and keeps it for failure_ttl", function()
    local runs = 0
    local g = cr(function(k)
      runs = runs + 1
      return nil, "down: " .. k
    end, { name = "failing", failure_ttl = 60 })
    local a, b = g("x")
    assert.is_nil(a)
    assert.equal("down: x", b)
    a, b = g("x")
    assert.is_nil(a)
    assert.equal("down: x", b)
    assert.equal(1, runs)
    assert.equal(1, support.stat("failing").failures)
    local h = cr(function() runs = runs + 1; return nil, "no" end, { name = "failing, not kept" })
    h(); h()
    assert.equal(3, runs)
    assert.equal(2, support.stat("failing, not kept").failures)
  end)

  it("a miss whose store step raises (the clock) leaves its key free for the next call", function()
    local broken = false
    cr.set_clock(function()
      if broken then error("clock broke") end
      return 0
    end)
    local runs = 0
    local f = cr(function(x) runs = runs + 1; broken = x == "first"; return { x } end,
      { ttl = 10, name = "store raises" })
    local ok, err = pcall(f, "first")
    assert.is_false(ok)
    assert.matches("clock broke", err)
    broken = false
    local v = f("again") -- another key: the module's state is intact
    assert.equal(v, f("again"))
    broken = false
    local ok2, v2 = pcall(f, "first") -- the key that raised is computed again, not "in flight"
    assert.is_false(ok2)
    assert.matches("clock broke", v2)
    assert.equal(3, runs)
    cr.set_clock(nil)
  end)

  support.it_needs("coroutine.close",
    "after a miss that raised, and a computation closed mid-way, misses still compute and store", function()
    local f = cr(function(x)
      if x == "raise" then error("boom") end
      if x == "yield" then coroutine.yield() end
      return { x }
    end, { name = "mixed" })
    assert.is_false(pcall(f, "raise"))
    local co = coroutine.create(function() return f("yield") end)
    assert.is_true((coroutine.resume(co)))
    assert.is_true((coroutine.close(co)))
    for i = 1, 50 do
      local v = f(i)
      assert.same({ i }, v)
      assert.equal(v, f(i))
    end
    -- the closed computation stored nothing; a new one runs to the end
    co = coroutine.create(function() return f("yield") end)
    assert.is_true((coroutine.resume(co)))
    local ok, v = coroutine.resume(co)
    assert.is_true(ok)
    assert.same({ "yield" }, v)
    assert.equal(v, f("yield"))
  end)
end)
