-- The hit path for no argument or one string/integer/boolean argument reads
-- a front index instead of building a key. These specs check that it always
-- gives what the general path would: the same entry, never a released one.
local cr = require "cache_resource"
local support = require "support"

describe("front index (one scalar or no argument)", function()
  before_each(support.reset)

  local function counting(opts)
    local runs = {}
    local f = cr(function(x)
      runs[#runs + 1] = x
      return { x }
    end, opts)
    return f, runs
  end

  it("keeps 1, 1.0, '1' and true apart", function()
    local f, runs = counting()
    local a, b, c, d = f(1), f(1.0), f("1"), f(true)
    assert.equal(4, #runs)
    assert.equal(a, f(1)); assert.equal(b, f(1.0)); assert.equal(c, f("1")); assert.equal(d, f(true))
    assert.equal(4, #runs)
    assert.equal("float", math.type(b[1]))
    assert.not_equal(f(false), d)
  end)

  it("never hands out an evicted entry", function()
    local f, runs = counting({ max_entries = 1 })
    local a = f("a")
    f("b")                      -- evicts "a"
    local a2 = f("a")
    assert.not_equal(a, a2)
    assert.same({ "a", "b", "a" }, runs)
    assert.equal(a2, f("a"))
  end)

  it("never hands out an expired entry", function()
    local clock = support.fake_clock(0)
    local f, runs = counting({ ttl = 10 })
    local a = f(7)
    clock.now = 5
    assert.equal(a, f(7))
    clock.now = 11
    assert.not_equal(a, f(7))
    assert.equal(2, #runs)
  end)

  it("follows clear(f, x), clear(f) and clear()", function()
    local f, runs = counting()
    local a = f("x")
    cr.clear(f, "x")
    local b = f("x")
    assert.not_equal(a, b)
    cr.clear(f)
    local c = f("x")
    assert.not_equal(b, c)
    cr.clear()
    assert.not_equal(c, f("x"))
    local g = cr(function() return {} end)
    local e1 = g()
    cr.clear(g, nil)
    assert.not_equal(e1, g())
    assert.equal(4, #runs)
  end)

  it("points at the new entry when on_release re-warms the same key", function()
    local f
    local made = 0
    f = cr(function(x) made = made + 1; return { x, made } end, {
      on_release = function(v) if v[2] == 1 then f(v[1]) end end,
    })
    f("k")
    cr.clear(f, "k")            -- releases entry 1, whose on_release stores entry 2
    local v = f("k")
    assert.equal(2, v[2])
    assert.equal(2, made)
    assert.equal(v, f("k"))
  end)

  it("stays right when options change on a re-wrap (validate on, then off)", function()
    local function wrap(opts)
      opts.name = "rewrapped"
      return cr(function(x) return { x } end, opts)
    end
    local f = wrap({})
    local a = f("a")
    local calls = 0
    local g = wrap({ validate = function() calls = calls + 1; return false end })
    local b = g("a")            -- validate fails: a new entry
    assert.not_equal(a, b)
    assert.equal(1, calls)
    local h = wrap({})
    assert.equal(b, h("a"))
    assert.equal(b, f("a"))
  end)

  it("does not index a skipped parameter or a session-scoped function", function()
    local runs = 0
    local f = cr(function(_conn) runs = runs + 1; return {} end)
    local a = f(io.stdout)
    assert.equal(a, f(io.stderr))
    assert.equal(a, f())
    assert.equal(1, runs)
    local s = cr(function(x) return { x } end, { scope = "session" })
    cr.set_session("one")
    local one = s("k")
    cr.set_session("two")
    assert.not_equal(one, s("k"))
    cr.end_session("one")
    cr.set_session("one")
    assert.not_equal(one, s("k"))
  end)

  it("long strings and many keys give the same entries as the general path", function()
    local f, runs = counting({ max_entries = 50 })
    local long = string.rep("x", 100)
    local first = {}
    for i = 1, 40 do first[i] = f(i % 2 == 0 and ("k" .. i) or i) end
    local l = f(long)
    for i = 1, 40 do assert.equal(first[i], f(i % 2 == 0 and ("k" .. i) or i)) end
    assert.equal(l, f(long))
    assert.equal(41, #runs)
  end)

  it("finalizers that clear while keys are being stored never leave a released entry reachable", function()
    local f, runs = counting({ max_entries = 8 })
    local live = setmetatable({}, { __mode = "v" })
    for i = 1, 2000 do
      setmetatable({}, { __gc = function() cr.clear(f) end })
      local k = "k" .. (i % 13)
      local v = f(k)
      assert.equal(k, v[1])
      live[k] = v
      if i % 97 == 0 then collectgarbage() end
    end
    for k, v in pairs(live) do
      local left, stored = cr.peek(f, k)
      if left then assert.equal(stored, f(k)) else assert.equal(k, f(k)[1]) end
      assert.equal(k, v[1])
    end
    assert.is_true(#runs > 13)
  end)

  it("hits that map straight to the value count as hits and return the same object", function()
    local f, runs = counting()
    local a = f("v")
    local before = cr.stats(f).hits
    for _ = 1, 3 do assert.equal(a, f("v")) end
    assert.equal(1, #runs)
    assert.equal(before + 3, cr.stats(f).hits)
  end)

  it("false, several values and no value come back exactly", function()
    local n = 0
    local f = cr(function(k) n = n + 1; if k == "f" then return false elseif k == "two" then return 1, nil, 3 end end)
    assert.is_false(f("f")); assert.is_false(f("f"))
    assert.equal(3, select("#", f("two"))); assert.equal(3, select(3, f("two")))
    assert.equal(0, select("#", f("none"))); assert.equal(0, select("#", f("none")))
    assert.equal(3, n)
  end)

  it("a re-wrap that adds max_entries brings back least-recently-used eviction", function()
    local released = {}
    local function wrap(opts)
      opts.name = "lru-rewrap"
      opts.on_release = function(v) released[#released + 1] = v[1] end
      return cr(function(x) return { x } end, opts)
    end
    local f = wrap({})
    f("a"); f("b")
    f = wrap({ max_entries = 2 })
    f("a")                      -- a hit: "a" becomes the most recently used
    f("c")                      -- evicts "b"
    assert.same({ "b" }, released)
  end)
  -- A bounded cache's index also holds keys of its own, so that evicting
  -- one key and adding another never makes it rehash over and over. They
  -- must never show: not as entries, not as hits, not after a re-wrap.
  it("a bounded cache at capacity, churned, hits and evicts exactly as the general path does", function()
    for _, cap in ipairs({ 700, 1000, 1024 }) do
      local f, runs = counting({ max_entries = cap, name = "churn" .. cap })
      for i = 1, 3 * cap do f("k" .. i) end
      local s = support.stat("churn" .. cap)
      assert.equal(cap, s.entries)
      assert.equal(2 * cap, s.evictions)
      for i = 2 * cap + 1, 3 * cap do assert.same({ "k" .. i }, f("k" .. i)) end
      assert.equal(3 * cap, #runs)
      assert.equal(cap, support.stat("churn" .. cap).hits)
      f("k1") -- long evicted: computed again
      assert.equal(3 * cap + 1, #runs)
    end
  end)

  it("a bounded cache's churn holds no registry references once its entries are gone", function()
    local f = cr(function(k) return { k } end, { max_entries = 100, name = "churn refs" })
    f("warm"); cr.clear(f)
    collectgarbage()
    local baseline = support.registry_objects()
    for i = 1, 1000 do f("k" .. i) end
    for i = 1, 1000 do f(i) end
    assert.equal(100, support.stat("churn refs").entries)
    cr.clear(f)
    collectgarbage()
    assert.equal(baseline, support.registry_objects())
  end)

  it("a cleared bounded cache's index keeps nothing, its own keys included", function()
    for _, cap in ipairs({ 100, 700, 1024 }) do
      local f = cr(function(k) return { k } end, { max_entries = cap, name = "ballast" .. cap })
      for i = 1, 2 * cap do f("k" .. i) end
      local _, index = debug.getupvalue(f, 2)
      local keys = 0
      for _ in pairs(index) do keys = keys + 1 end
      assert.is_true(keys >= cap)
      cr.clear(f)
      assert.is_nil(next(index))
    end
  end)

  it("a cache re-wrapped between bounded and unbounded keeps its index right", function()
    local runs = 0
    local function fn(x) runs = runs + 1; return { x } end
    local f = cr(fn, { max_entries = 100, name = "rewrap" })
    for i = 1, 300 do f(i) end
    f = cr(fn, { name = "rewrap" })
    for i = 301, 600 do f(i) end
    f = cr(fn, { max_entries = 100, name = "rewrap" })
    for i = 601, 900 do f(i) end
    assert.equal(900, runs)
    for i = 801, 900 do assert.same({ i }, f(i)) end
    assert.equal(900, runs)
    assert.equal(100, support.stat("rewrap").entries)
  end)
  -- Session caches: each session store has an index of its own.
  describe("in session scope", function()
    after_each(function() cr.set_session(nil) end)

    it("each session's hits are its own entries, with one argument or none", function()
      local f, runs = counting({ scope = "session", name = "per-session" })
      local none = cr(function() return {} end, { scope = "session", name = "per-session none" })
      cr.set_session("alice")
      local a, a0 = f("k"), none()
      cr.set_session("bob")
      local b, b0 = f("k"), none()
      assert.not_equal(a, b)
      assert.not_equal(a0, b0)
      cr.set_session("alice")
      assert.equal(a, f("k")); assert.equal(a0, none())
      cr.set_session("bob")
      assert.equal(b, f("k")); assert.equal(b0, none())
      assert.equal(2, #runs)
      assert.equal(2, support.stat("per-session").hits)
    end)

    it("an ended session's entries never come back, nor cleared or evicted ones", function()
      local f, runs = counting({ scope = "session", max_entries = 2, name = "ended" })
      cr.set_session("s")
      local a = f("a")
      cr.end_session("s")
      cr.set_session("s")             -- a new session of the same id
      local a2 = f("a")
      assert.not_equal(a, a2)
      cr.clear(f, "a")
      assert.not_equal(a2, f("a"))
      f("b"); f("c")                  -- evicts "a"
      local before = #runs
      f("a")
      assert.equal(before + 1, #runs)
      assert.same({ "a", "a", "a", "b", "c", "a" }, runs)
    end)

    it("expired entries are computed again", function()
      local clock = support.fake_clock(0)
      local f, runs = counting({ scope = "session", ttl = 10, name = "session ttl" })
      cr.set_session("s")
      local v = f(1)
      clock.now = 5
      assert.equal(v, f(1))
      clock.now = 11
      assert.not_equal(v, f(1))
      assert.equal(2, #runs)
      cr.set_clock(nil)
    end)

    it("a session cache re-wrapped with max_entries evicts its least recently used entry", function()
      local released = {}
      local function wrap(opts)
        opts.scope, opts.name = "session", "session lru-rewrap"
        opts.on_release = function(v) released[#released + 1] = v[1] end
        return cr(function(x) return { x } end, opts)
      end
      cr.set_session("s")
      local f = wrap({})
      local a = f("a"); f("b")
      assert.equal(a, f("a"))       -- an unbounded session cache's hit
      f = wrap({ max_entries = 2 })
      assert.equal(a, f("a"))       -- a hit: "a" becomes the most recently used
      f("c")                        -- evicts "b"
      assert.same({ "b" }, released)
      assert.equal(1, support.stat("session lru-rewrap").evictions)
    end)

    it("options that rule the index out take effect on the next hit", function()
      local checks = 0
      local function fn(x) return { x } end
      local f = cr(fn, { scope = "session", name = "rewrapped" })
      cr.set_session("s")
      local v = f("x")
      assert.equal(v, f("x"))
      f = cr(fn, { scope = "session", name = "rewrapped", validate = function() checks = checks + 1; return true end })
      assert.equal(v, f("x"))
      assert.equal(1, checks)
    end)
  end)
end)
