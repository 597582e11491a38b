-- cache_data: cached functions whose every caller gets its own copy.
local cr = require "cache_resource"
local cache_data = require "cache_resource.data"
local support = require "support"

local function bits(x) return string.pack("<d", x) end
local err_of = support.error_of

describe("cache_data", function()
  before_each(support.reset)

  describe("wrapping", function()
    it("is require('cache_resource').data", function()
      assert.equal(cr.data, cache_data)
    end)

    it("cache_data(fn) returns a plain function that caches", function()
      local runs = 0
      local f = cache_data(function(x) runs = runs + 1; return { x = x } end)
      assert.equal("function", type(f))
      assert.same({ x = 1 }, f(1))
      assert.same({ x = 1 }, f(1))
      assert.equal(1, runs)
    end)

    it("cache_data(fn, opts) and cache_data(opts)(fn) apply the options", function()
      local f = cache_data(function(x) return x end, { max_entries = 1, name = "data opts" })
      local g = cache_data { max_entries = 2, name = "data deco" } (function(x) return x end)
      f(1); f(2); g(1); g(2)
      assert.equal(1, cr.stats(f).entries)
      assert.equal(2, cr.stats(g).entries)
      assert.equal(1, cr.stats(f).max_entries)
    end)

    it("checks the decorator's options when they are written, in errors that start with cache_data:", function()
      assert.equal("cache_data: unknown option 'tll' (did you mean 'ttl'?)", err_of(cache_data, { tll = 5 }))
      assert.matches("^cache_data: option 'max_entries' must be an integer >= 1, got a string \"10\"",
        err_of(cache_data, print, { max_entries = "10" }))
      assert.matches("bad argument #1 to 'cache_data' %(function or callable table expected, got number%)",
        err_of(cache_data, 42))
    end)

    it("starts the errors of its calls with cache_data:", function()
      local f = cache_data(function(x) return x end, { name = "keyed" })
      assert.matches("^cache_data: cannot hash argument 'x' %(a userdata 'FILE%*'%) of keyed", err_of(f, io.stdout))
      local s = cache_data(function() return 1 end, { scope = "session", name = "per session" })
      assert.matches("^cache_data: per session has scope 'session' but no session is set", err_of(s))
      local r
      r = cache_data(function() return r() end, { name = "recursive" })
      assert.matches("cache_data: recursive call of recursive", err_of(r), 1, true)
    end)

    it("is managed by cache_resource.clear, stats, info and peek", function()
      local f = cache_data(function(x) return { x } end, { name = "managed" })
      f(1)
      assert.equal(1, cr.stats(f).entries)
      assert.equal("managed", cr.info(f).name)
      local life, v = cr.peek(f, 1)
      assert.equal(math.huge, life)
      assert.same({ 1 }, v)
      cr.clear(f, 1)
      assert.equal(0, cr.stats(f).entries)
    end)

    it("gives the same function under both decorators two caches (its identity includes its kind)", function()
      local runs = 0
      local function load(x) runs = runs + 1; return { x } end
      local as_resource, as_data = cr(load), cache_data(load)
      as_resource(1); as_data(1)
      assert.equal(2, runs)
      local named_r = cr(load, { name = "both" })
      local named_d = cache_data(load, { name = "both" })
      named_r(1); named_d(1)
      assert.equal(4, runs)
      assert.equal("resource", cr.stats(named_r).kind)
      assert.equal("data", cr.stats(named_d).kind)
    end)

    it("keys arguments by value, as cache_resource does", function()
      local runs = 0
      local f = cache_data(function(t) runs = runs + 1; return t.a end)
      f({ a = 1, b = 2 }); f({ b = 2, a = 1 })
      assert.equal(1, runs)
    end)

    it("refuses validate and on_release, naming the fix", function()
      for _, opt in ipairs({ "validate", "on_release" }) do
        assert.equal("cache_data: unknown option '" .. opt .. "' (cache_data returns copies; use cache_resource "
          .. "for values that need releasing)", err_of(cache_data, print, { [opt] = print }))
      end
    end)

    it("leaves persist and max_size to cache_data: cache_resource does not know them", function()
      assert.matches("cache_resource: unknown option 'max_size'", err_of(cr, print, { max_size = 10 }), 1, true)
      assert.matches("cache_resource: unknown option 'persist'", err_of(cr, print, { persist = false }), 1, true)
    end)

    it("takes max_size in bytes or as a size string, shown in bytes by info()", function()
      local cases = { [1] = 1, [4096] = 4096, ["500KB"] = 512000, ["1.5 MB"] = 1572864, ["2gb"] = 2147483648,
        ["10 b"] = 10, ["1.5kB"] = 1536, ["0.9999 KB"] = 1023 }
      for given, bytes in pairs(cases) do
        local f = cache_data(function() end, { max_size = given, name = "size " .. tostring(given) })
        assert.equal(bytes, cr.info(f).options.max_size, tostring(given))
        assert.equal(math.type(bytes), math.type(cr.info(f).options.max_size))
        assert.equal(bytes, cr.stats(f).max_size)
      end
      assert.equal(math.huge, cr.stats(cache_data(function() end, { name = "unbounded" })).max_size)
    end)

    it("rejects a max_size that is not a size", function()
      assert.matches("option 'max_size' must be an integer >= 1 (bytes) or a size string like \"500KB\", got 0",
        err_of(cache_data, print, { max_size = 0 }), 1, true)
      assert.matches("option 'max_size' must be an integer >= 1 (bytes) or a size string like \"500KB\", got 1.5",
        err_of(cache_data, print, { max_size = 1.5 }), 1, true)
      for _, bad in ipairs({ "500", "5 TB", "KB", "1..5MB", "0.5 B", "-1KB", "" }) do
        assert.matches("cache_data: option 'max_size': cannot read the size '" .. bad .. "'",
          err_of(cache_data, print, { max_size = bad }), 1, true)
      end
      assert.matches("got a boolean (true)", err_of(cache_data, print, { max_size = true }), 1, true)
    end)

    it("refuses persist with scope = \"session\" or experimental_allow_widgets, naming both options", function()
      assert.matches("cache_data: option 'persist' cannot be used with scope = \"session\"",
        err_of(cache_data, print, { persist = true, scope = "session" }), 1, true)
      assert.matches("cache_data: option 'persist' cannot be used with experimental_allow_widgets",
        err_of(cache_data, print, { persist = "disk", experimental_allow_widgets = true }), 1, true)
    end)

    it("takes persist = true, \"disk\", a store or false, and refuses anything else", function()
      -- a store that keeps nothing: later clears of every store call it, silently
      local function none() end
      for _, given in ipairs({ true, "disk", { get = none, set = none, delete = none, clear = none,
        generation = none } }) do
        local f = cache_data(function() return 1 end, { persist = given })
        assert.equal(given, cr.info(f).options.persist)
      end
      assert.matches("the store has no method 'get'", err_of(cache_data, print, { persist = {} }), 1, true)
      assert.matches("option 'persist' must be true, \"disk\", a store or false, got a string \"memory\"",
        err_of(cache_data, print, { persist = "memory" }), 1, true)
      local f = cache_data(function() return 1 end, { persist = false })
      assert.equal(1, f())
      assert.is_false(cr.info(f).options.persist)
      assert.is_false(cr.stats(f).persist)
    end)
  end)

  for _, mode in ipairs(support.COPY_MODES) do
  describe("copies, " .. mode.name, function()
    before_each(function() cr.set_replay_compile(mode.compile_after) end)

    it("returns the function's own values on a miss and a fresh copy on every hit", function()
      local made
      local f = cache_data(function() made = { rows = { 1, 2 } }; return made end)
      local first = f()
      assert.equal(made, first)
      local second, third = f(), f()
      assert.are_not.equal(first, second)
      assert.are_not.equal(second, third)
      assert.are_not.equal(second.rows, third.rows)
      assert.same(first, second)
    end)

    it("is not affected by a caller mutating what it got (Streamlit: test_mutate_return)", function()
      local f = cache_data(function() return { 0, 1, 2, nested = { "a" } } end)
      local r = f()
      r[1] = "changed"
      r.nested[1] = "changed"
      local again = f()
      again[2] = "changed too"
      assert.same({ 0, 1, 2, nested = { "a" } }, f())
    end)

    it("decodes a fresh copy for peek", function()
      local f = cache_data(function() return { 1 } end)
      local v = f()
      local _, p1 = cr.peek(f)
      local _, p2 = cr.peek(f)
      assert.same({ 1 }, p1)
      assert.are_not.equal(v, p1)
      assert.are_not.equal(p1, p2)
    end)

    it("decodes a fresh copy for a waiter woken by the owner", function()
      local f = cache_data(function() coroutine.yield(); return { "built" } end)
      cr.set_waiter(function() coroutine.yield() end)
      local got = {}
      local a = coroutine.wrap(function() got.a = f() end)
      local b = coroutine.wrap(function() got.b = f() end)
      a(); b(); a(); b()
      assert.same({ "built" }, got.a)
      assert.same({ "built" }, got.b)
      assert.are_not.equal(got.a, got.b)
    end)

    it("decodes a fresh copy for a stale hit", function()
      local clock = support.fake_clock(0)
      local n = 0
      local f = cache_data(function() n = n + 1; return { n = n } end,
        { ttl = 10, refresh_mode = "background", name = "stale copies" })
      local fresh = f()
      clock.now = 15
      local stale = f() -- no scheduler: refreshed in the foreground of this call
      assert.are_not.equal(fresh, stale)
      assert.equal(2, stale.n)
    end)

    it("copies exactly: subtypes, float bits, strings byte for byte, nils and the value count", function()
      local nan = string.unpack("<d", "\1\0\0\0\0\0\xf8\x7f")
      local f = cache_data(function()
        return 1, 1.0, -0.0, nan, 1 / 0, "a\0b", nil, { 2, 2.0, [3.5] = -1 / 0 }, nil
      end)
      f()
      local r = table.pack(f())
      assert.equal(9, r.n)
      assert.equal("integer", math.type(r[1]))
      assert.equal("float", math.type(r[2]))
      assert.equal(bits(-0.0), bits(r[3]))
      assert.equal(bits(nan), bits(r[4]))
      assert.equal(math.huge, r[5])
      assert.equal("a\0b", r[6])
      assert.is_nil(r[7])
      assert.equal("integer", math.type(r[8][1]))
      assert.equal("float", math.type(r[8][2]))
      assert.equal(-math.huge, r[8][3.5])
      assert.is_nil(r[9])
    end)

    it("copies raw contents: no metamethod runs", function()
      local function boom() error("a metamethod ran", 0) end
      local mt = { __index = boom, __newindex = boom, __pairs = boom, __len = boom }
      local f = cache_data(function() return setmetatable({ x = 1 }, mt) end)
      f()
      local c = f()
      assert.equal(1, rawget(c, "x"))
      assert.equal(mt, getmetatable(c))
    end)

    it("keeps the sharing graph of the whole result list, cycles included", function()
      local f = cache_data(function()
        local shared = { "s" }
        local t = { a = shared, b = shared }
        t.self = t
        return t, shared
      end)
      f()
      local t, shared = f()
      assert.equal(t.a, t.b)
      assert.equal(t.a, shared)
      assert.equal(t, t.self)
    end)

    it("gives copies the same metatable (a class is shared)", function()
      local Point = {}
      Point.__index = Point
      function Point.sum(p) return p.x + p.y end
      local f = cache_data(function(x, y) return setmetatable({ x = x, y = y }, Point) end)
      f(1, 2)
      local p = f(1, 2)
      assert.equal(Point, getmetatable(p))
      assert.equal(3, p:sum())
    end)

    describe("register_metatable", function()
      it("registers one name per metatable and one metatable per name", function()
        local A, B, name = {}, {}, "spec.A " .. mode.name
        cache_data.register_metatable(name, A)
        cache_data.register_metatable(name, A) -- the same pair again: nothing happens
        assert.matches("the name '" .. name .. "' is already registered for another metatable",
          err_of(cache_data.register_metatable, name, B), 1, true)
        assert.matches("this metatable is already registered as '" .. name .. "'",
          err_of(cache_data.register_metatable, "spec.B " .. mode.name, A), 1, true)
        assert.matches("a non-empty string name expected, got an empty string",
          err_of(cache_data.register_metatable, "", B), 1, true)
        assert.matches("a non-empty string name expected, got table",
          err_of(cache_data.register_metatable, B, B), 1, true)
        assert.matches("a metatable expected, got no value", err_of(cache_data.register_metatable, "spec.C"), 1, true)
      end)
    end)

    describe("a result that cannot be copied", function()
      it("raises an error naming the function, the path, what it is and the fix (Streamlit: unserializable return)",
        function()
          local load_rows = cache_data(function() return { 1 }, { conn = io.stdout } end, { name = "load_rows" })
          assert.equal("cache_data: cannot copy the result of load_rows: result[2].conn is a userdata 'FILE*' (only "
            .. "nil, booleans, numbers, strings and tables can be copied; use cache_resource for objects such as "
            .. "connections)", err_of(load_rows))
        end)

      it("names bad keys, paths of every kind and nesting past 100 levels", function()
        local result
        local f = cache_data(function() return result end, { name = "f" })
        result = { index = { [print] = 1 } }
        assert.matches("cannot copy the result of f: a key in result[1].index is a function", err_of(f), 1, true)
        result = { ["any string"] = { [3] = { [1.5] = { [true] = coroutine.create(print) } } } }
        assert.matches('result[1]["any string"][3][1.5][true] is a thread', err_of(f), 1, true)
        local deep = {}
        local t = deep
        for _ = 1, 100 do t.next = {}; t = t.next end
        result = deep
        assert.matches("cannot copy the result of f: result[1] nests deeper than 100 levels", err_of(f), 1, true)
      end)

      it("is not stored, counts as a failure and discards the recorded UI calls", function()
        local shown = {}
        local show = cr.replayable(function(s) shown[#shown + 1] = s end, "show")
        local runs = 0
        local f = cache_data(function() runs = runs + 1; show("ran"); return print end,
          { name = "uncopyable " .. mode.name })
        err_of(f)
        err_of(f)
        assert.equal(2, runs)
        assert.same({ "ran", "ran" }, shown)
        local s = cr.stats(f)
        assert.equal(2, s.failures)
        assert.equal(0, s.entries)
        assert.equal(0, s.replay_bytes)
      end)
    end)

    it("serves the stale copy when recomputing gives a result that cannot be copied", function()
      local clock = support.fake_clock(0)
      local result = { ok = true }
      local f = cache_data(function() return result end, { ttl = 10, max_stale = 60, name = "stale if uncopyable" })
      f()
      clock.now = 15
      result = { conn = io.stdout }
      local got
      local seen = support.capture_warnings(function() got = f() end)
      assert.same({ ok = true }, got)
      assert.matches("cannot copy the result of stale if uncopyable: result[1].conn is a userdata 'FILE*'", seen[1],
        1, true)
    end)

    it("returns failure results unchanged, keeping them only with failure_ttl", function()
      local err = { code = 7 }
      local runs = 0
      local f = cache_data(function() runs = runs + 1; return nil, err end, { name = "fails " .. mode.name })
      local v, e = f()
      assert.is_nil(v)
      assert.equal(err, e)
      f()
      assert.equal(2, runs)
      support.fake_clock(0)
      local g = cache_data(function() runs = runs + 1; return nil, err end,
        { failure_ttl = 60, name = "fails kept " .. mode.name })
      assert.equal(err, select(2, g()))
      local _, copy = g()
      assert.equal(3, runs)
      assert.same(err, copy)
      assert.are_not.equal(err, copy)
    end)

    it("copies large tables of rows, and strings that need escaping", function()
      local rows = {}
      for i = 1, 300 do rows[i] = { id = i, name = "row \"" .. i .. "\"\0\n\\", share = i / 7, flag = i % 2 == 0 } end
      local f = cache_data(function() return rows, #rows end)
      f()
      for _ = 1, 3 do
        local copy, n = f()
        assert.equal(300, n)
        assert.same(rows, copy)
        assert.are_not.equal(rows[1], copy[1])
      end
    end)
  end)
  end

  describe("expiry and bounds", function()
    it("expires entries after ttl and evicts past max_entries", function()
      local clock = support.fake_clock(0)
      local runs = 0
      local f = cache_data(function(x) runs = runs + 1; return { x } end, { ttl = 10, max_entries = 2 })
      f(1); f(2); f(1); f(3) -- 2 is the least recently used
      assert.equal(3, runs)
      f(1)
      assert.equal(3, runs)
      clock.now = 11
      assert.equal(2, cr.expire())
      f(1)
      assert.equal(4, runs)
    end)

    it("counts the encoded bytes of its entries", function()
      local f = cache_data(function(n) return string.rep("x", n) end, { name = "bytes" })
      assert.equal(0, cr.stats(f).bytes)
      f(100)
      local one = cr.stats(f).bytes
      assert.is_true(one >= 100 and one < 130, "100 bytes encoded as " .. one)
      f(1000)
      assert.is_true(cr.stats(f).bytes >= one + 1000)
      cr.clear(f, 100)
      assert.is_true(cr.stats(f).bytes >= 1000 and cr.stats(f).bytes < 1030)
      cr.clear(f)
      assert.equal(0, cr.stats(f).bytes)
    end)

    it("evicts the least recently used entries past max_size", function()
      local runs = 0
      local f = cache_data(function(k) runs = runs + 1; return string.rep(k, 400) end,
        { max_size = "1KB", name = "bounded" })
      f("a"); f("b")
      f("a") -- a hit: b is now the least recently used
      f("c") -- 3 x ~410 bytes > 1024: b goes
      local s = cr.stats(f)
      assert.equal(2, s.entries)
      assert.equal(1, s.evictions)
      assert.is_true(s.bytes <= 1024)
      assert.equal(3, runs)
      f("a")
      assert.equal(3, runs)
      f("b")
      assert.equal(4, runs)
    end)

    it("returns an entry larger than max_size alone without storing it", function()
      local runs = 0
      local f = cache_data(function() runs = runs + 1; return string.rep("x", 2000) end,
        { max_size = 1024, name = "too big" })
      assert.equal(2000, #f())
      assert.equal(2000, #f())
      assert.equal(2, runs)
      assert.equal(0, cr.stats(f).entries)
      assert.equal(0, cr.stats(f).bytes)
    end)
  end)

  for _, mode in ipairs(support.REPLAY_MODES) do
    describe("replay, " .. mode.name, function()
      before_each(function() cr.set_replay_compile(mode.compile_after) end)

      it("replays UI calls on every hit, each with a fresh copy of the copied arguments", function()
        local got = {}
        local show = cr.replayable(function(t) got[#got + 1] = t; t.seen = true end, "show")
        local f = cache_data(function() show({ label = "rows" }); return { 1 } end)
        f(); f(); f()
        assert.equal(3, #got)
        assert.same({ label = "rows", seen = true }, got[3])
        assert.are_not.equal(got[2], got[3])
        assert.is_nil(got[3].extra)
      end)
    end)
  end

  describe("clearing", function()
    it("cache_data.clear() clears every cache_data function and no cache_resource one", function()
      local d = cache_data(function(x) return { x } end)
      local r = cr(function(x) return { x } end)
      d(1); r(1)
      cache_data.clear()
      assert.equal(0, cr.stats(d).entries)
      assert.equal(1, cr.stats(r).entries)
    end)

    it("cache_resource.clear() clears every cache_resource function and no cache_data one", function()
      local d = cache_data(function(x) return { x } end)
      local r = cr(function(x) return { x } end)
      d(1); r(1)
      cr.clear()
      assert.equal(1, cr.stats(d).entries)
      assert.equal(0, cr.stats(r).entries)
    end)

    it("cache_data.clear() clears every session's entries too", function()
      local d = cache_data(function(x) return { x } end, { scope = "session" })
      cr.set_session("a"); d(1)
      cr.set_session("b"); d(1)
      cache_data.clear()
      assert.equal(0, cr.stats(d).entries)
    end)
  end)

  describe("statistics", function()
    it("rows have a kind; cache_data rows have persist, max_size, bytes and store counters", function()
      local d = cache_data(function() return "v" end, { name = "stats data" })
      local r = cr(function() return "v" end, { name = "stats resource" })
      d(); r()
      local sd, sr = cr.stats(d), cr.stats(r)
      assert.equal("data", sd.kind)
      assert.equal("resource", sr.kind)
      assert.is_false(sd.persist)
      assert.equal(math.huge, sd.max_size)
      assert.is_true(sd.bytes > 0)
      for _, k in ipairs({ "store_hits", "store_writes", "store_errors", "persist_skipped" }) do
        assert.equal(0, sd[k], k)
        assert.is_nil(sr[k], k)
      end
      assert.is_nil(sr.bytes)
      assert.is_nil(sr.max_size)
      local kinds = {}
      for _, row in ipairs(cr.stats()) do kinds[row.name] = row.kind end
      assert.equal("data", kinds["stats data"])
      assert.equal("resource", kinds["stats resource"])
    end)
  end)
end)
