-- Stores: ttl, max_entries, validate, on_release, scope, expiry, clearing, stats.
local cr = require "cache_resource"
local support = require "support"

describe("max_entries", function()
  before_each(support.reset)

  it("evicts least recently used: Streamlit's case releases 0, 1, 3 in order", function()
    local released = {}
    local f = cr(function(k) return "value" .. k end,
      { max_entries = 5, on_release = function(v) released[#released + 1] = v end })
    for k = 0, 4 do f(k) end
    f(2)
    for k = 5, 7 do f(k) end
    assert.same({ "value0", "value1", "value3" }, released)
    local s = support.stat("f")
    assert.equal(5, s.entries)
    assert.equal(3, s.evictions)
  end)

  it("a write refreshes recency too", function()
    local released = {}
    local f = cr(function(k) return k end,
      { max_entries = 2, on_release = function(v) released[#released + 1] = v end })
    f("a"); f("b"); f("a"); f("c")
    assert.same({ "b" }, released)
  end)
end)

describe("ttl", function()
  before_each(support.reset)
  after_each(function() cr.set_clock(nil) end)

  it("expires entries counted from when they were stored", function()
    local clock = support.fake_clock(100)
    local runs = { n = 0 }
    local f = cr(function() runs.n = runs.n + 1; return {} end, { ttl = 10 })
    local a = f()
    clock.now = 109.9
    assert.equal(a, f())
    clock.now = 110
    assert.not_equal(a, f())
    assert.equal(2, runs.n)
    assert.equal(1, support.stat("f").expirations)
  end)

  local durations = {
    { "90s", 90 }, { "1.5h", 5400 }, { "1d2h34m", 86400 + 2 * 3600 + 34 * 60 }, { "500ms", 0.5 },
    { "2 days", 172800 }, { "30 minutes", 1800 }, { "1 hour", 3600 }, { "1w", 604800 },
    { "2h 30m", 9000 }, { "45 SECONDS", 45 },
  }
  for _, d in ipairs(durations) do
    it("reads the duration string '" .. d[1] .. "' as " .. d[2] .. " s", function()
      local clock = support.fake_clock(0)
      local f = cr(function() return {} end, { ttl = d[1] })
      local v = f()
      clock.now = d[2] * 0.999
      assert.equal(v, f())
      clock.now = d[2]
      assert.not_equal(v, f())
    end)
  end

  it("ttl = 0 keeps nothing past the call that stored it", function()
    support.fake_clock(5)
    local f = cr(function() return {} end, { ttl = 0 })
    assert.not_equal(f(), f())
  end)

  it("releases another function's expired entry when any cached function is called", function()
    local clock = support.fake_clock(0)
    local released = {}
    local function keep(v) released[#released + 1] = v end
    local short = cr(function() return "short" end, { ttl = 10, on_release = keep })
    local long = cr(function() return "long" end, { ttl = 20, on_release = keep })
    short(); long()
    clock.now = 15
    local plain = cr(function() return "no ttl" end)
    plain()
    assert.same({ "short" }, released)
    clock.now = 25
    long()
    assert.same({ "short", "long" }, released)
  end)

  it("expire() releases what has expired and returns how many", function()
    local clock = support.fake_clock(0)
    local released = {}
    local f = cr(function(k) return k end, { ttl = 5, on_release = function(v) released[#released + 1] = v end })
    f(1); f(2)
    clock.now = 3
    f(3)
    assert.equal(0, cr.expire())
    clock.now = 6
    assert.equal(2, cr.expire())
    assert.same({ 1, 2 }, released)
    clock.now = 100
    assert.equal(1, cr.expire())
    assert.equal(0, cr.expire())
  end)
end)

describe("validate", function()
  before_each(support.reset)

  it("is called with the cached values on hits only", function()
    local calls = {}
    local f = cr(function(x) return { x }, "second" end,
      { validate = function(a, b) calls[#calls + 1] = { a, b }; return true end })
    local v = f(1)
    assert.equal(0, #calls)
    assert.equal(v, f(1))
    assert.equal(1, #calls)
    assert.equal(v, calls[1][1])
    assert.equal("second", calls[1][2])
  end)

  it("a falsy result drops the entry without on_release and recomputes", function()
    local released, runs = {}, { n = 0 }
    local fresh = true
    local f = cr(function() runs.n = runs.n + 1; return { runs.n } end, {
      validate = function() return fresh end,
      on_release = function(v) released[#released + 1] = v end,
    })
    local a = f()
    fresh = false
    local b = f()
    assert.not_equal(a, b)
    assert.equal(2, runs.n)
    assert.same({}, released)
    fresh = true
    assert.equal(b, f())
    local s = support.stat("f")
    assert.equal(2, s.misses)
    assert.equal(1, s.hits)
  end)

  it("may yield", function()
    local f = cr(function() return {} end, { validate = function() coroutine.yield("checking"); return true end })
    local v = f()
    local co = coroutine.wrap(function() return f() end)
    assert.equal("checking", co())
    assert.equal(v, co())
  end)
end)

describe("on_release", function()
  before_each(support.reset)

  it("gets all of an entry's values", function()
    local got
    local f = cr(function() return "a", nil, "c" end, { on_release = function(...) got = table.pack(...) end })
    f()
    cr.clear(f)
    assert.same({ "a", nil, "c", n = 3 }, got)
  end)

  it("an error in one release is a warning and the other releases still run", function()
    local released = {}
    local f = cr(function(k) return k end, { on_release = function(v)
      released[#released + 1] = v
      if v == 2 then error("cannot close 2") end
    end })
    f(1); f(2); f(3)
    local warnings = support.capture_warnings(function() cr.clear() end)
    table.sort(released)
    assert.same({ 1, 2, 3 }, released)
    assert.equal(1, #warnings)
    assert.matches("on_release of f raised an error: .*cannot close 2", warnings[1])
    assert.equal(0, support.stat("f").entries)
  end)

  it("may call cached functions and clear while releasing", function()
    local other = cr(function(x) return x end)
    local f
    f = cr(function(k) return k end, { max_entries = 1, on_release = function(v)
      other(v)
      cr.clear()
    end })
    f(1); f(2)            -- evicting 1 clears everything, 2 included
    assert.equal(0, support.stat("f").entries)
    f(3)
    assert.equal(1, support.stat("f").entries)
    assert.equal(3, f(3))
  end)
end)

describe("clearing", function()
  before_each(support.reset)

  -- the tag is a scalar upvalue: each tag is its own cache
  local function counted(tag)
    local released = {}
    local f = cr(function(k) return { k, tag } end, { on_release = function(v) released[#released + 1] = v[1] end })
    return f, released
  end

  it("cr.clear(f) releases every entry of f", function()
    local f, released = counted()
    f(1); f(2)
    cr.clear(f)
    table.sort(released)
    assert.same({ 1, 2 }, released)
    assert.equal(0, support.stat("f").entries)
  end)

  it("cr.clear(f, nil) is the entry of f(): a trailing nil is an argument like in a call", function()
    local f, released = counted("t")
    local none = f()
    local one = f(1)
    cr.clear(f, nil)
    assert.equal(0, #released) -- the entry of f() holds { nil, "t" }: released[1] stays nil
    assert.equal(1, cr.stats(f).entries)
    assert.equal(one, f(1))
    assert.not_equal(none, f())
  end)

  it("management functions refuse a function that is not a cached function, naming it", function()
    for _, name in ipairs({ "clear", "stats", "info", "peek" }) do
      local ok, err = pcall(cr[name], print)
      assert.is_false(ok)
      assert.matches("cache_resource%." .. name
        .. "' %(a cached function expected, got a function that is not a cached function", err)
      ok, err = pcall(cr[name], {})
      assert.is_false(ok)
      assert.matches("a cached function expected, got table", err)
    end
    assert.has_error(function() cr.clear(nil) end)
  end)

  it("cr.clear(f, ...) releases only the entry those arguments key", function()
    local f, released = counted()
    local one = f(1)
    f(2)
    cr.clear(f, 2)
    assert.same({ 2 }, released)
    assert.equal(one, f(1))
  end)

  it("cr.clear(f, ...) computes the key exactly like a call (skipped params, trailing nils, tables)", function()
    local released = {}
    local f = cr(function(cfg, _conn) return cfg.x end, { on_release = function(v) released[#released + 1] = v end })
    f({ x = 1, y = 2 }, io.stdout)
    cr.clear(f, { y = 2, x = 1 }, io.stderr, nil)
    assert.same({ 1 }, released)
  end)

  it("cache_resource.clear() releases every entry of every function", function()
    local f, rf = counted("f")
    local g, rg = counted("g")
    f(1); g(2)
    cr.clear()
    assert.same({ 1 }, rf)
    assert.same({ 2 }, rg)
  end)

  it("clearing during a computation: the caller gets its values, not stored, not released", function()
    local released = {}
    local runs = { n = 0 }
    local f = cr(function() runs.n = runs.n + 1; coroutine.yield(); return { runs.n } end,
      { on_release = function(v) released[#released + 1] = v end })
    local co = coroutine.create(function() return f() end)
    coroutine.resume(co)
    cr.clear(f)
    local ok, v = coroutine.resume(co)
    assert.is_true(ok)
    assert.same({ 1 }, v)
    assert.same({}, released)
    assert.equal(0, support.stat("f").entries)
    local again = coroutine.wrap(function() return f() end)
    again()
    assert.same({ 2 }, again())
  end)
end)

describe("stats", function()
  before_each(support.reset)

  it("returns one table per cached function with every counter", function()
    local clock = support.fake_clock(0)
    local stats_fn = cr(function(k) return k end, { max_entries = 2, ttl = 10 })
    stats_fn(1); stats_fn(1); stats_fn(2); stats_fn(3)
    clock.now = 20
    cr.expire()
    local s = support.stat("stats_fn")
    assert.matches("store_spec%.lua:%d+%-%d+$", s.where)
    s.where = nil
    assert.same({ kind = "resource", name = "stats_fn", scope = "global", ttl = 10, max_entries = 2,
      refresh_mode = "foreground",
      entries = 0, hits = 1, stale_hits = 0, misses = 3, failures = 0, refreshes = 0, refresh_failures = 0,
      evictions = 1, expirations = 2, replay_bytes = 0 }, s)
  end)
end)

describe("session scope", function()
  before_each(support.reset)

  it("keeps one cache per session", function()
    local f = cr(function() return {} end, { scope = "session" })
    cr.set_session("alice")
    local a = f()
    cr.set_session("bob")
    local b = f()
    assert.not_equal(a, b)
    cr.set_session("alice")
    assert.equal(a, f())
    assert.equal("alice", cr.session())
    assert.equal("session", support.stat("f").scope)
    assert.equal(2, support.stat("f").entries)
  end)

  it("raises without a current session", function()
    local per_user = cr(function() return 1 end, { scope = "session" })
    local ok, err = pcall(function() local r = per_user(); return r end)
    assert.is_false(ok)
    assert.matches("per_user has scope 'session' but no session is set", err)
    assert.matches("set_session", err)
  end)

  it("end_session releases that session's entries with on_release", function()
    local released = {}
    local f = cr(function(k) return k end,
      { scope = "session", on_release = function(v) released[#released + 1] = v end })
    local g = cr(function(k) return k end, { on_release = function(v) released[#released + 1] = "global " .. v end })
    cr.set_session("s1"); f("one"); g("x")
    cr.set_session("s2"); f("two")
    cr.end_session("s1")
    assert.same({ "one" }, released)
    assert.equal(1, support.stat("f").entries)
    assert.is_nil(cr.session() == "s1" and true or nil)
  end)

  it("cr.clear(f) clears the current session only", function()
    local f = cr(function() return {} end, { scope = "session" })
    cr.set_session("a"); local a = f()
    cr.set_session("b"); f()
    cr.clear(f)
    cr.set_session("a")
    assert.equal(a, f())
  end)

  it("on_release may end the session whose store is evicting", function()
    local released = {}
    local f = cr(function(k) return k end, { scope = "session", max_entries = 1, on_release = function(v)
      released[#released + 1] = v
      cr.end_session("busy")
    end })
    cr.set_session("busy")
    f(1)
    assert.equal(2, f(2)) -- evicts 1, whose release ends the session mid-insert
    table.sort(released)
    assert.same({ 1, 2 }, released)
    assert.is_nil(cr.session())
    cr.set_session("busy")
    assert.equal(3, f(3))
    assert.equal(1, support.stat("f").entries)
  end)

  it("a computation whose session ends meanwhile returns its values without storing", function()
    local f = cr(function() coroutine.yield(); return {} end, { scope = "session" })
    cr.set_session("gone")
    local co = coroutine.create(function() return f() end)
    coroutine.resume(co)
    cr.end_session("gone")
    local ok, v = coroutine.resume(co)
    assert.is_true(ok)
    assert.is_table(v)
    assert.equal(0, support.stat("f").entries)
  end)
end)

describe("many sessions", function()
  before_each(support.reset)

  it("thousands of sessions keep their own entries; ending some releases exactly theirs", function()
    local released = {}
    local opts = { scope = "session", on_release = function(v) released[v.sid] = (released[v.sid] or 0) + 1 end }
    local f = cr(function(k) return { sid = cr.session(), k = k } end, opts)
    local g = cr(function(k) return { sid = cr.session(), g = k } end,
      { scope = "session", name = "many g", on_release = opts.on_release })
    local N = 3000
    local first = {}
    for i = 1, N do
      cr.set_session("user" .. i)
      first[i] = f(i)
      g(i)
    end
    -- end every third session, in a scattered order
    local ended = {}
    for i = N, 1, -1 do
      if i % 3 == 0 then cr.end_session("user" .. i); ended[i] = true end
    end
    for i = 1, N do
      local sid = "user" .. i
      assert.equal(ended[i] and 2 or nil, released[sid])
      cr.set_session(sid)
      local v = f(i)
      if ended[i] then
        assert.not_equal(first[i], v) -- a new session of that id starts empty
      else
        assert.equal(first[i], v) -- the same object: still cached
      end
      assert.equal(sid, v.sid)
    end
    assert.equal(N, cr.stats(f).entries)
    cr.set_session(nil)
    cr.clear(f) -- every session's entries of f, not g's
    assert.equal(0, cr.stats(f).entries)
    assert.equal(N - N // 3, cr.stats(g).entries)
    cr.clear()
    assert.equal(0, cr.stats(g).entries)
  end)

  it("clear(f, k) without a session reaches every session, even when on_release ends one", function()
    local released = {}
    local f = cr(function(k) return { k, cr.session() } end, { scope = "session", on_release = function(v)
      released[#released + 1] = v[2] .. v[1]
      cr.end_session(v[2]) -- the session being cleared: its other entry goes too
    end })
    for _, sid in ipairs({ "a", "b", "c", "d" }) do
      cr.set_session(sid)
      f(1); f(2)
    end
    cr.set_session(nil)
    cr.clear(f, 1)
    table.sort(released)
    assert.same({ "a1", "a2", "b1", "b2", "c1", "c2", "d1", "d2" }, released)
    assert.equal(0, cr.stats(f).entries)
  end)

  it("a session ended from a callback while another session's store is cleared", function()
    local f
    f = cr(function(k) return { k } end, { scope = "session", on_release = function(v)
      if v[1] == 1 then cr.end_session("b"); cr.end_session("c") end
    end })
    for _, sid in ipairs({ "a", "b", "c", "d" }) do
      cr.set_session(sid)
      f(1); f(2)
    end
    cr.set_session(nil)
    cr.clear(f)
    assert.equal(0, cr.stats(f).entries)
  end)
end)

describe("registry references (leak check)", function()
  before_each(support.reset)

  it("every stored value's reference is released again", function()
    local base = cr.live_refs()
    local f = cr(function(k) return {}, k end, { max_entries = 10 })
    for i = 1, 100 do f(i) end
    assert.equal(base + 20, cr.live_refs())
    cr.clear()
    assert.equal(base, cr.live_refs())
  end)
end)
