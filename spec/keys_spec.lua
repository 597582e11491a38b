-- SPEC §3.2: argument keys.
local cr = require "cache_resource"
local support = require "support"
local H = cr.hash

describe("argument keys (SPEC 3.2)", function()
  before_each(support.reset)

  describe("cache_resource.hash", function()
    it("returns 32 hex digits", function()
      assert.matches("^%x+$", H(1, "a", { b = 2 }))
      assert.equal(32, #H(1, "a", { b = 2 }))
    end)

    it("is stable for equal argument lists", function()
      assert.equal(H("x", 1, { 2 }), H("x", 1, { 2 }))
    end)
  end)

  describe("type framing", function()
    it("keeps 1, 1.0, '1', true and {1} apart", function()
      local seen = {}
      for _, v in ipairs({ 1, 1.0, "1", true, { 1 } }) do
        local h = H(v)
        assert.is_nil(seen[h], "collision for " .. tostring(v))
        seen[h] = true
      end
    end)

    it("keeps integer and float subtypes apart", function()
      assert.not_equal(H(3), H(3.0))
      assert.not_equal(H(math.maxinteger), H(math.maxinteger + 0.0))
    end)

    it("keeps 0.0 and -0.0 apart", function()
      assert.not_equal(H(0.0), H(-0.0))
    end)

    it("makes every NaN equal to every NaN", function()
      local nan1, nan2 = 0 / 0, -(0 / 0)
      assert.equal(H(nan1), H(nan2))
      assert.equal(H({ x = nan1 }), H({ x = nan2 }))
      assert.not_equal(H(nan1), H(math.huge))
    end)

    it("frames strings so concatenations do not collide", function()
      assert.not_equal(H("ab", "c"), H("a", "bc"))
      assert.not_equal(H("a\0b"), H("a\0c"))
    end)

    it("keeps nil positions: (1, nil, 2) is not (1, 2)", function()
      assert.not_equal(H(1, nil, 2), H(1, 2))
    end)

    it("ignores trailing nils", function()
      assert.equal(H(1), H(1, nil, nil))
      assert.equal(H(), H(nil))
    end)
  end)

  describe("tables", function()
    it("are equal regardless of insertion order", function()
      local a, b = {}, {}
      for i = 1, 50 do a["k" .. i] = i end
      for i = 50, 1, -1 do b["k" .. i] = i end
      assert.equal(H(a), H(b))
    end)

    it("treat arrays built backwards like arrays built forwards", function()
      local a, b = { 10, 20, 30 }, {}
      b[3] = 30; b[2] = 20; b[1] = 10
      assert.equal(H(a), H(b))
    end)

    it("hash by content, deeply", function()
      assert.equal(H({ a = { b = { c = 1 } } }), H({ a = { b = { c = 1 } } }))
      assert.not_equal(H({ a = { b = { c = 1 } } }), H({ a = { b = { c = 2 } } }))
    end)

    it("distinguish keys from values and mixed keys", function()
      assert.not_equal(H({ a = "b" }), H({ b = "a" }))
      assert.not_equal(H({ [1] = "x" }), H({ ["1"] = "x" }))
      assert.not_equal(H({ 1, 2 }), H({ 1, 2, 3 }))
      assert.not_equal(H({ {} }), H({}))
    end)

    it("hash a cycle as a fixed placeholder: same-shaped cycles are equal", function()
      local a, b = {}, {}
      a.self = a
      b.self = b
      assert.equal(H(a), H(b))
      local c = { self = {} }
      assert.not_equal(H(a), H(c))
    end)

    it("handle a longer cycle through several tables", function()
      local function ring()
        local x, y = { name = "x" }, { name = "y" }
        x.next, y.next = y, x
        return x
      end
      assert.equal(H(ring()), H(ring()))
    end)

    it("include a metatable's __name", function()
      local Point = { __name = "Point" }
      local Vec = { __name = "Vec" }
      assert.not_equal(H(setmetatable({ 1, 2 }, Point)), H(setmetatable({ 1, 2 }, Vec)))
      assert.not_equal(H(setmetatable({ 1, 2 }, Point)), H({ 1, 2 }))
      assert.equal(H(setmetatable({ 1, 2 }, Point)), H(setmetatable({ 1, 2 }, { __name = "Point" })))
    end)

    it("refuse nesting deeper than 100 levels with a clear error, not a crash", function()
      local deep = {}
      local cur = deep
      for _ = 1, 10000 do cur.x = {}; cur = cur.x end
      local f = cr(function(cfg) return cfg end)
      local ok, err = pcall(function() local r = f(deep); return r end)
      assert.is_false(ok)
      assert.matches("cannot hash argument 'cfg' of f: tables nested deeper than 100 levels", err)
      -- the module is still usable afterwards
      assert.equal(5, f(5))
    end)

    it("accept nesting of 100 levels", function()
      local deep = {}
      local cur = deep
      for _ = 1, 99 do cur.x = {}; cur = cur.x end
      assert.equal(32, #H(deep))
    end)

    it("keep long keys apart (kept as digests past the inline threshold)", function()
      local a, b = {}, {}
      for i = 1, 1000 do a[i] = i; b[i] = i end
      b[1000] = -1
      local f = cr(function(t) return { t[1000] } end)
      assert.same({ 1000 }, f(a))
      assert.same({ -1 }, f(b))
      assert.equal(f(a), f(a))
    end)
  end)

  describe("functions as arguments", function()
    it("hash Lua functions by identity: same code and scalar captures", function()
      local function make(n) return function() return n end end
      assert.equal(H(make(1)), H(make(1)))
      assert.not_equal(H(make(1)), H(make(2)))
    end)

    it("hash C functions by pointer", function()
      assert.equal(H(print), H(print))
      assert.not_equal(H(print), H(tostring))
    end)

    it("hash a cached function by its cache", function()
      local g = cr(function() return 1 end)
      assert.equal(H(g), H(g))
    end)
  end)

  describe("in cached functions", function()
    it("look up by value: equal tables hit the same entry", function()
      local runs = { n = 0 }
      local f = cr(function(cfg) runs.n = runs.n + 1; return { cfg.url } end)
      local a = f({ url = "db://x", pool = 4 })
      local b = f({ pool = 4, url = "db://x" })
      assert.equal(a, b)
      assert.equal(1, runs.n)
    end)

    it("skip parameters whose name starts with _", function()
      local runs = { n = 0 }
      local f = cr(function(_conn, query) runs.n = runs.n + 1; return { query } end)
      local a = f(io.stdout, "select 1")
      local b = f(io.stderr, "select 1")
      assert.equal(a, b)
      assert.equal(1, runs.n)
      assert.not_equal(a, f(io.stdout, "select 2"))
    end)

    it("a call's key is the key clear(...) computes: trailing nils, skipped parameters, scalars", function()
      local runs = 0
      local f = cr(function(_conn, a, b, c) runs = runs + 1; return runs end)
      local lists = {
        { io.stdout, "s", 1 }, { io.stdout, true, 2.5, false }, { io.stdout }, { nil, nil, -0.0 },
        { io.stdout, 0 / 0, math.mininteger, "with\0nul" }, { io.stdout, nil, nil, 7 },
      }
      for _, args in ipairs(lists) do
        local first = f(table.unpack(args, 1, 4))
        assert.equal(first, f(table.unpack(args, 1, 4)), "a second call is a hit")
        local other = { io.stderr, table.unpack(args, 2, 4) } -- another skipped value, trailing nils
        cr.clear(f, table.unpack(other, 1, 6))
        assert.equal(first + 1, f(table.unpack(args, 1, 4)), "clear removed the entry the call made")
      end
    end)

    it("always hash extra ... arguments", function()
      local f = cr(function(_a, ...) return { ... } end)
      assert.not_equal(f(1, "x"), f(1, "y"))
      local ok, err = pcall(f, 1, io.stdout)
      assert.is_false(ok)
      assert.matches("cannot hash argument '#2'", err)
    end)

    it("a table argument mutated after the call is a new key", function()
      local f = cr(function(t) return { t.v } end)
      local t = { v = 1 }
      local a = f(t)
      t.v = 2
      assert.same({ 2 }, f(t))
      assert.same({ 1 }, a)
    end)
  end)

  describe("unhashable values", function()
    it("name the parameter, the type, the function and both fixes", function()
      local get_db = cr(function(conn) return conn end)
      local ok, err = pcall(function() local r = get_db(io.stdout); return r end)
      assert.is_false(ok)
      assert.matches("cannot hash argument 'conn'", err, 1, true)
      assert.matches("userdata", err, 1, true)
      assert.matches("of get_db", err, 1, true)
      assert.matches("prefix the parameter with an underscore ('_conn')", err, 1, true)
      assert.matches("hash_funcs", err, 1, true)
    end)

    it("refuse threads and userdata nested in tables", function()
      local f = cr(function(opts) return opts end)
      local ok, err = pcall(f, { co = coroutine.create(print) })
      assert.is_false(ok)
      assert.matches("cannot hash argument 'opts' (a table holding a thread)", err, 1, true)
    end)

    it("cache_resource.hash refuses them too", function()
      assert.has_error(function() H(io.stdout) end)
    end)
  end)

  describe("hash_funcs", function()
    it("replace a type by name", function()
      local runs = { n = 0 }
      local f = cr(function(conn) runs.n = runs.n + 1; return {} end,
        { hash_funcs = { userdata = function(u) return "one connection" end } })
      assert.equal(f(io.stdout), f(io.stderr))
      assert.equal(1, runs.n)
    end)

    it("look up a metatable's __name", function()
      local f = cr(function(fh) return {} end, { hash_funcs = { ["FILE*"] = function(fh) return tostring(fh) end } })
      assert.equal(f(io.stdout), f(io.stdout))
      assert.not_equal(f(io.stdout), f(io.stderr))
    end)

    it("look up a metatable itself, before __name and type name", function()
      local mt = { __name = "Conn" }
      local used = {}
      local f = cr(function(c) return {} end, { hash_funcs = {
        [mt] = function(c) used[#used + 1] = "mt"; return c.id end,
        Conn = function(c) used[#used + 1] = "name"; return 0 end,
        table = function(c) used[#used + 1] = "type"; return 0 end,
      } })
      local a = f(setmetatable({ id = 1, noise = {} }, mt))
      local b = f(setmetatable({ id = 1, noise = { 2 } }, mt))
      assert.equal(a, b)
      assert.same({ "mt", "mt" }, used)
    end)

    it("apply to values nested in tables", function()
      local f = cr(function(cfg) return {} end, { hash_funcs = { userdata = function() return "fh" end } })
      assert.equal(f({ out = io.stdout }), f({ out = io.stderr }))
    end)

    it("name the hash function and the cached function when one raises, keeping the message", function()
      local load_it = cr(function(x) return x end, { hash_funcs = { table = function() error("boom in hasher") end } })
      local ok, err = pcall(function() local r = load_it({}); return r end)
      assert.is_false(ok)
      assert.matches("hash_funcs['table']", err, 1, true)
      assert.matches("of load_it", err, 1, true)
      assert.matches("boom in hasher", err, 1, true)
      assert.equal(5, load_it(5)) -- scalars do not go through the table hasher
    end)

    it("may call other cached functions (reentrant hashing)", function()
      local inner = cr(function(x) return "id-" .. tostring(x) end)
      local outer = cr(function(t) return { t.id } end, { hash_funcs = { table = function(t) return inner(t.id) end } })
      assert.equal(outer({ id = 1, junk = 1 }), outer({ id = 1, junk = 2 }))
    end)

    it("copies the table: later edits do not change keys", function()
      local hf = { userdata = function() return 1 end }
      local f = cr(function(u) return {} end, { hash_funcs = hf })
      local a = f(io.stdout)
      hf.userdata = nil
      assert.equal(a, f(io.stderr))
    end)
  end)
end)
