-- Failure results: `nil, err` is a failure, not a value.
local cr = require "cache_resource"
local support = require "support"
local tiny = require "tiny_scheduler"

describe("failure results", function()
  before_each(support.reset)

  it("returns nil, err unchanged, stores nothing and runs fn again next time", function()
    local runs = 0
    local err = { code = "ECONNREFUSED" }
    local connect = cr(function(host)
      runs = runs + 1
      if runs == 1 then return nil, err end
      return { host = host }
    end)
    local a, b = connect("db")
    assert.is_nil(a)
    assert.equal(err, b)
    assert.is_nil(cr.peek(connect, "db"))
    local conn = connect("db")
    assert.same({ host = "db" }, conn)
    assert.equal(conn, connect("db"))
    assert.equal(2, runs)
    local s = cr.stats(connect)
    assert.equal(1, s.failures)
    assert.equal(2, s.misses)
    assert.equal(1, s.hits)
    assert.equal(1, s.entries)
  end)

  it("keeps every value of a failure result (nil, msg, code)", function()
    local f = cr(function() return nil, "no such file", 2 end)
    local r = table.pack(f())
    assert.same({ n = 3, nil, "no such file", 2 }, r)
    assert.equal(0, cr.stats(f).entries)
  end)

  it("nil, false is a failure too", function()
    local runs = 0
    local f = cr(function() runs = runs + 1; return nil, false end)
    local a, b = f()
    assert.is_nil(a)
    assert.is_false(b)
    f()
    assert.equal(2, runs)
    assert.equal(2, cr.stats(f).failures)
  end)

  it("a lone nil and nil, nil are values, cached as before", function()
    local runs = 0
    local lone = cr(function() runs = runs + 1; return nil end)
    local pair = cr(function() runs = runs + 1; return nil, nil end)
    lone(); lone()
    assert.equal(2, select("#", pair()))
    assert.equal(2, select("#", pair()))
    assert.equal(2, runs)
    assert.equal(0, cr.stats(lone).failures)
    assert.equal(0, cr.stats(pair).failures)
  end)

  it("false, err and a failure's value after nil are not confused", function()
    local f = cr(function(x) if x then return false, "x" end return nil, nil, "third" end)
    assert.is_false(f(1))
    f(1)
    f()
    f()
    assert.equal(0, cr.stats(f).failures)
    assert.equal(2, cr.stats(f).hits)
  end)

  it("discards the UI calls a failed run recorded", function()
    local shown = {}
    local text = cr.replayable(function(s) shown[#shown + 1] = s end, "failures.text")
    local runs = 0
    local f = cr(function()
      runs = runs + 1
      text("attempt " .. runs)
      if runs == 1 then return nil, "down" end
      return "up"
    end)
    f()
    f()
    shown = {}
    assert.equal("up", f())  -- a hit replays the successful run's calls only
    assert.same({ "attempt 2" }, shown)
  end)

  describe("failure_ttl", function()
    it("keeps a failure for that long; its hits replay its UI calls", function()
      local clock = support.fake_clock(100)
      local shown = {}
      local text = cr.replayable(function(s) shown[#shown + 1] = s end, "failures.ttl.text")
      local runs = 0
      local f = cr(function()
        runs = runs + 1
        text("trying " .. runs)
        if runs == 1 then return nil, "down" end
        return "up"
      end, { failure_ttl = "30s" })
      assert.same({ n = 2, nil, "down" }, table.pack(f()))
      shown = {}
      clock.now = 120
      assert.same({ n = 2, nil, "down" }, table.pack(f()))  -- negative caching
      assert.same({ "trying 1" }, shown)
      local left, v1, v2 = cr.peek(f)
      assert.equal(10, left)
      assert.is_nil(v1)
      assert.equal("down", v2)
      clock.now = 130.5
      assert.equal("up", f())
      assert.equal(2, runs)
      local s = cr.stats(f)
      assert.equal(1, s.failures)
      assert.equal(1, s.hits)
      assert.equal(1, s.expirations)
    end)

    it("applies to failures only: values keep their ttl", function()
      local clock = support.fake_clock(0)
      local f = cr(function(ok) if ok then return "v" end return nil, "e" end, { failure_ttl = 5, ttl = 100 })
      f(true); f(false)
      assert.equal(100, (cr.peek(f, true)))
      assert.equal(5, (cr.peek(f, false)))
      clock.now = 6
      assert.is_nil(cr.peek(f, false))
      assert.equal(94, (cr.peek(f, true)))
    end)

    it("does not run validate on a stored failure", function()
      local validated = 0
      local f = cr(function() return nil, "e" end, {
        failure_ttl = 10,
        validate = function(conn) validated = validated + 1; return conn:ping() end,
      })
      f()
      assert.same({ n = 2, nil, "e" }, table.pack(f()))
      assert.equal(0, validated)
    end)

    it("accepts numbers and duration strings; info shows seconds", function()
      local f = cr(function() end, { failure_ttl = "1m30s" })
      assert.equal(90, cr.info(f).options.failure_ttl)
      local g = cr(function() end, { failure_ttl = 0.5 })
      assert.equal(0.5, cr.info(g).options.failure_ttl)
    end)

    it("rejects bad values with an error naming the option", function()
      local function err_of(opts)
        local ok, err = pcall(cr, function() end, opts)
        assert.is_false(ok)
        return err
      end
      assert.matches("option 'failure_ttl' must be a number of seconds or a duration string",
        err_of { failure_ttl = true })
      assert.matches("got a boolean", err_of { failure_ttl = true })
      assert.matches("got a table", err_of { failure_ttl = {} })
      assert.matches("option 'failure_ttl' must be >= 0 seconds, got %-1", err_of { failure_ttl = -1 })
      assert.matches("option 'failure_ttl': cannot read the duration '10 parsecs'",
        err_of { failure_ttl = "10 parsecs" })
      assert.matches("did you mean 'failure_ttl'", err_of { failure_tll = 1 })
    end)
  end)

  describe("with respect to waiters", function()
    it("counts as the owner failing: one waiter takes over (scheduler)", function()
      local s = tiny.new()
      cr.set_scheduler(s.functions())
      local runs = 0
      local f = cr(function()
        runs = runs + 1
        local mine = runs
        coroutine.yield()
        if mine == 1 then return nil, "first try failed" end
        return { "from run " .. mine }
      end)
      local tasks = {}
      for i = 1, 4 do tasks[i] = s.go(f) end
      assert.equal(0, s.run())
      assert.equal(2, runs)
      assert.same({ true, nil, "first try failed", n = 3 }, tasks[1].result)
      for i = 2, 4 do
        assert.is_true(tasks[i].result[1])
        assert.equal(tasks[2].result[2], tasks[i].result[2])
      end
      assert.same({ "from run 2" }, tasks[2].result[2])
      assert.equal(1, cr.stats(f).failures)
    end)

    it("counts as the owner failing: one waiter takes over (polling waiter)", function()
      cr.set_waiter(function() coroutine.yield() end)
      local s = tiny.new()
      local runs = 0
      local f = cr(function()
        runs = runs + 1
        local mine = runs
        coroutine.yield()
        if mine == 1 then return nil, "e" end
        return mine
      end)
      local tasks = {}
      for i = 1, 3 do tasks[i] = s.go(f) end
      s.run()
      assert.equal(2, runs)
      assert.same({ true, 2, n = 2 }, tasks[3].result)
    end)

    it("with failure_ttl, waiters get the stored failure", function()
      local s = tiny.new()
      cr.set_scheduler(s.functions())
      local runs = 0
      local f = cr(function()
        runs = runs + 1
        coroutine.yield()
        return nil, "down"
      end, { failure_ttl = 10 })
      local tasks = {}
      for i = 1, 3 do tasks[i] = s.go(f) end
      assert.equal(0, s.run())
      assert.equal(1, runs)
      for i = 1, 3 do assert.same({ true, nil, "down", n = 3 }, tasks[i].result) end
    end)
  end)

  it("failure cycles leave no registry references behind", function()
    local clock = support.fake_clock(0)
    local text = cr.replayable(function() end, "failures.leak.text")
    local f = cr(function(k, mode)
      text({ k = k }, setmetatable({}, {}))
      if mode == "fail" then return nil, { reason = k } end
      if mode == "raise" then error({ k }) end
      return { k }
    end, { failure_ttl = 2, max_entries = 20 })
    f(0); cr.clear(f); collectgarbage(); collectgarbage()
    local refs0 = cr.live_refs()
    for i = 1, 3000 do
      local mode = (i % 3 == 0) and "fail" or (i % 3 == 1) and "raise" or nil
      pcall(f, i % 40, mode)
      if i % 100 == 0 then clock.now = clock.now + 3 end
    end
    cr.clear()
    collectgarbage(); collectgarbage()
    assert.equal(refs0, cr.live_refs())
    assert.equal(0, cr.stats(f).entries)
  end)
end)
