-- Argument keys: framing, tables, functions, exactness, messages.
local cr = require "cache_resource"
local support = require "support"
local H = cr.hash

describe("argument keys", function()
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

    it("hash a cycle as a back-reference: same-shaped cycles are equal", function()
      local a, b = {}, {}
      a.self = a
      b.self = b
      assert.equal(H(a), H(b))
      local c = { self = {} }
      assert.not_equal(H(a), H(c))
    end)

    it("tell cycles apart by the ancestor they close on: t.x.y = t is not t.x.y = t.x", function()
      local function shape(to_root)
        local t = { x = { y = false } }
        t.x.y = to_root and t or t.x
        return t
      end
      assert.not_equal(H(shape(true)), H(shape(false)))
      assert.equal(H(shape(true)), H(shape(true)))
      assert.equal(H(shape(false)), H(shape(false)))
      local f = cr(function(t) return {} end)
      assert.not_equal(f(shape(true)), f(shape(false)))
    end)

    it("handle a longer cycle through several tables", function()
      local function ring()
        local x, y = { name = "x" }, { name = "y" }
        x.next, y.next = y, x
        return x
      end
      assert.equal(H(ring()), H(ring()))
    end)

    it("include a metatable's whole __name, embedded NULs included", function()
      local a = setmetatable({ 1 }, { __name = "Point\0v1" })
      local b = setmetatable({ 1 }, { __name = "Point\0v2" })
      assert.not_equal(H(a), H(b))
      assert.not_equal(H(a), H(setmetatable({ 1 }, { __name = "Point" })))
      local f = cr(function(p) return {} end)
      assert.not_equal(f(a), f(b))
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
  describe("exact keys", function()
    local kd = require "keydecode"
    local KB = cr.key_bytes

    -- Closures of two different codes with 13 upvalues; only the 13th may
    -- be a scalar (the others are tables, which are not part of a key).
    local function make_g(u13)
      local u1, u2, u3, u4, u5, u6, u7, u8, u9, u10, u11, u12 = {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}
      return function() return u1, u2, u3, u4, u5, u6, u7, u8, u9, u10, u11, u12, u13 end
    end
    local function make_h(u13)
      local u1, u2, u3, u4, u5, u6, u7, u8, u9, u10, u11, u12 = {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}
      return function() return { u1, u2, u3, u4, u5, u6, u7, u8, u9, u10, u11, u12, u13 } end
    end

    it("an empty options table is the same identity as none", function()
      local body = function() return {} end
      local plain = cr(body)
      assert.equal(plain(), cr(body, {})())
      assert.equal(plain(), cr({})(body)())
      assert.not_equal(plain(), cr(body, { max_entries = 3 })())
    end)

    it("frame the name option whole: names differing after a NUL are two caches", function()
      local one = cr(function() return "one" end, { name = "Point\0v1" })
      local two = cr(function() return "two" end, { name = "Point\0v2" })
      assert.equal("one", one())
      assert.equal("two", two())
    end)

    it("never read an upvalue index as the end of a list (a forged collision through index 13)", function()
      -- With indices written bare, upvalue 13 reads as the tag that closes
      -- a list, and these two argument lists had the same bytes (for one of
      -- the two orders of the functions' identities).
      for _, makers in ipairs({ { make_g, make_h }, { make_h, make_g } }) do
        local G, Hm = makers[1], makers[2]
        local A = { [G("v")] = "y", [Hm({})] = "w" }
        local B1, B2, B3 = { [G({})] = "v" }, "y", Hm("w")
        local f = cr(function(...) return { n = select("#", ...) } end)
        assert.equal(1, f(A).n)
        assert.equal(3, f(B1, B2, B3).n) -- not the entry of A
        assert.not_equal(H(A), H(B1, B2, B3))
        assert.not_equal(KB(A), KB(B1, B2, B3))
      end
    end)

    it("keep scalar upvalues by index: a closure's 13th capture is part of its key", function()
      assert.not_equal(H(make_g("a")), H(make_g("b")))
      assert.equal(H(make_g("a")), H(make_g("a")))
      assert.not_equal(H(make_g("a")), H(make_g({})))
      local up = kd.decode(KB(make_g(7)))[1].upvalues
      assert.same({ { index = 13, v = { t = "int", v = 7 } } }, up)
    end)

    describe("trailing nils are judged after skipped parameters", function()
      local function count_runs(opts)
        local runs = 0
        local f = cr(function(name, _conn) runs = runs + 1; return runs end, opts)
        return f, function() return runs end
      end

      it("on the scalar hit path: f(nil, conn) and f() are one key", function()
        local f, runs = count_runs()
        assert.equal(1, f(nil, io.stdout))
        assert.equal(1, f())
        assert.equal(1, f(nil, io.stderr, nil))
        assert.equal(1, runs())
        assert.equal(2, f("db"))
        assert.equal(2, f("db", io.stdout))
      end)

      it("on the general path (hash_funcs given)", function()
        local f, runs = count_runs({ hash_funcs = { thread = function() return 0 end } })
        assert.equal(1, f(nil, io.stdout))
        assert.equal(1, f())
        assert.equal(1, runs())
      end)

      it("with a skipped parameter between hashed ones", function()
        local runs = 0
        local f = cr(function(a, _conn, b) runs = runs + 1; return runs end)
        assert.equal(1, f(1, io.stdout))
        assert.equal(1, f(1, nil, nil))
        assert.equal(1, f(1))
        assert.equal(2, f(1, io.stdout, 2))
        assert.equal(2, f(1, nil, 2))
      end)

      it("the hit path and clear(...) compute the same key", function()
        local runs = 0
        local f = cr(function(name, _conn) runs = runs + 1; return runs end)
        assert.equal(1, f(nil, io.stdout)) -- the scalar path made the entry
        cr.clear(f, nil, io.stderr)         -- the general path removes it
        assert.equal(2, f())
      end)
    end)

    describe("decode back to exactly the argument list (spec/keydecode.lua)", function()
      local function zoo()
        local self_ref = {}
        self_ref.me = self_ref
        local to_root, to_mid = { x = { y = false } }, { x = { y = false } }
        to_root.x.y = to_root
        to_mid.x.y = to_mid.x
        local deep = {}
        local cur = deep
        for _ = 1, 99 do cur.x = {}; cur = cur.x end
        local up_s, up_n, up_b = "captured\0nul", 42, false
        local function lua_fn() return up_s, up_n, up_b, self_ref end
        local gm = ("a b"):gmatch("%a") -- a C closure with scalar upvalues
        local cached = cr(function() return 1 end, { name = "zoo cached" })
        return {
          { true }, { false }, { 0 }, { -1 }, { math.maxinteger }, { math.mininteger },
          { 0.0 }, { -0.0 }, { 1 / 0 }, { -1 / 0 }, { 0 / 0 }, { 1.5 }, { 2 ^ 53 }, { 3.0 },
          { "" }, { "1" }, { "a\0b" }, { string.rep("long ", 80) }, { "\x0d" }, { "\x0c\x0d" },
          { {} }, { { 1, 2, 3 } }, { { 1, nil, 3 } }, { { [2] = "b" } }, { { 1, [4] = 4 } },
          { { x = 1, [true] = 2, [1.5] = 3, [-1] = 4, [0] = 5, [{}] = 6, [{ 1 }] = 7 } },
          { { [{}] = 1, [{}] = 2 } }, { { [{}] = 1, [{}] = 1 } },
          { setmetatable({ 1 }, { __name = "Point" }) }, { setmetatable({ 1 }, { __name = "Point\0v2" }) },
          { setmetatable({ "mt" }, { __name = 42 }) }, -- a __name that is not a string: no name
          { self_ref }, { to_root }, { to_mid }, { deep },
          { lua_fn }, { make_g("v") }, { make_g({}) }, { make_h(13) }, { print }, { gm }, { cached },
          { { [lua_fn] = print, [print] = lua_fn } },
          { 1, nil, 2 }, { nil, nil, "x" }, { nil, false }, { "ab", "c" }, { "a", "bc" },
          { { 1 }, { 2 } }, { { { 1 } } },
        }
      end

      it("round-trips a zoo of values", function()
        for i, args in ipairs(zoo()) do
          local n = #args
          for j = 1, 3 do if args[j] ~= nil then n = math.max(n, j) end end
          local bytes = KB(table.unpack(args, 1, n))
          local ok, decoded = pcall(kd.decode, bytes)
          assert(ok, "entry " .. i .. ": " .. tostring(decoded))
          local expected = kd.describe_args(table.unpack(args, 1, n))
          assert(kd.same_args(decoded, expected),
            "entry " .. i .. ": decoded " .. kd.show_args(decoded) .. ", expected " .. kd.show_args(expected))
        end
      end)

      it("gives different bytes to every two entries of the zoo", function()
        local seen = {}
        for i, args in ipairs(zoo()) do
          local bytes = KB(table.unpack(args, 1, 3))
          assert(seen[bytes] == nil, "entries " .. tostring(seen[bytes]) .. " and " .. i .. " share their bytes")
          seen[bytes] = i
        end
      end)

      it("drops trailing nils, and key_bytes digests to hash", function()
        assert.equal(KB(1), KB(1, nil, nil))
        assert.equal("", KB())
        assert.equal(H(1, "x"), H(1, "x", nil))
      end)

      it("refuses bytes the encoder never writes", function()
        local good = KB({ a = 1, b = 2 }, "s")
        assert.is_true(kd.same_args(kd.decode(good), kd.describe_args({ a = 1, b = 2 }, "s")))
        local T = kd.TAGS
        local bad = {
          good:sub(1, -2),                                  -- truncated
          good .. "\xff",                                   -- unknown tag
          good .. string.char(T.NIL),                       -- a trailing nil
          good .. string.char(T.END),                       -- a stray list end
          string.char(T.STRING, 0x81, 0x00) .. "x",         -- a non-minimal length
          string.char(T.CYCLE, 0),                          -- a back-reference at the top
          string.char(T.TABLE, 0, T.NIL, T.ARRAY_END, T.END), -- nil in an array part
          string.char(T.TABLE, 0, T.ARRAY_END, T.INT) .. string.pack("<i8", 1) .. string.char(T.TRUE, T.END),
          string.char(T.TABLE, 0, T.ARRAY_END, T.STRING, 1, 98, T.TRUE, T.STRING, 1, 97, T.TRUE, T.END), -- order
          string.char(T.TABLE, 0, T.ARRAY_END, T.STRING, 1, 97, T.TRUE, T.STRING, 1, 97, T.TRUE, T.END), -- twice
          string.char(T.LFUNC) .. string.rep("\0", 16) .. string.char(2, 13, T.TRUE, 13, T.TRUE), -- indices
          string.char(T.LFUNC) .. string.rep("\0", 16) .. string.char(1, 1, T.TABLE, 0, T.ARRAY_END, T.END),
        }
        for i, bytes in ipairs(bad) do
          assert.is_false(pcall(kd.decode, bytes), "malformed input " .. i .. " was accepted")
        end
      end)
    end)

    describe("scratch memory", function()
      local LIMIT = 1024 * 1024 -- the buffers keep at most a few times 64 KiB

      it("is given back after an outsized string argument", function()
        local f = cr(function(s) return #s end)
        local big = string.rep("x", 8 * 1024 * 1024)
        assert.equal(#big, f(big))
        assert.is_true(cr.key_scratch_bytes() < LIMIT, "kept " .. cr.key_scratch_bytes() .. " bytes")
        assert.equal(#big, f(big)) -- still the same key (kept as a digest)
        assert.equal(32, #H(big))
        assert.is_true(cr.key_scratch_bytes() < LIMIT, "kept " .. cr.key_scratch_bytes() .. " bytes")
      end)

      it("is given back after a table with many pairs", function()
        local t = {}
        for i = 60000, 1, -1 do t["k" .. i] = i end
        assert.equal(H(t), H(t))
        assert.is_true(cr.key_scratch_bytes() < LIMIT, "kept " .. cr.key_scratch_bytes() .. " bytes")
      end)

      it("is given back after a large function body", function()
        local src = { "return function() local t = {" }
        for i = 1, 20000 do src[#src + 1] = ("%d.5,"):format(i) end
        src[#src + 1] = "} return t end"
        local fn = load(table.concat(src))()
        assert.equal(32, #H(fn))
        assert.is_true(cr.key_scratch_bytes() < LIMIT, "kept " .. cr.key_scratch_bytes() .. " bytes")
      end)

      it("is given back when hashing fails halfway", function()
        local big = { string.rep("y", 4 * 1024 * 1024), io.stdout }
        assert.is_false(pcall(H, big))
        assert.is_true(cr.key_scratch_bytes() < LIMIT, "kept " .. cr.key_scratch_bytes() .. " bytes")
        assert.equal(32, #H({ 1 })) -- and the buffers are free for the next key
      end)
    end)
  end)

  describe("messages", function()
    it("an unhashable extra ... argument: only hash_funcs, by position", function()
      local collect = cr(function(first, ...) return select("#", ...) end)
      local ok, err = pcall(function() local r = collect(1, 2, io.stdout); return r end)
      assert.is_false(ok)
      assert.matches("cannot hash argument '#3' (a userdata 'FILE*') of collect", err, 1, true)
      assert.matches("an extra argument is always part of the key", err, 1, true)
      assert.matches('hash_funcs = { ["FILE*"] = function(v)', err, 1, true)
      assert.not_matches("prefix the parameter", err, 1, true)
      assert.not_matches("_conn", err, 1, true)
    end)

    it("an unhashable argument of a C function: only hash_funcs", function()
      local fmt = cr(string.format)
      local ok, err = pcall(fmt, "%s", io.stdout)
      assert.is_false(ok)
      assert.matches("cannot hash argument '#2'", err, 1, true)
      assert.not_matches("prefix the parameter", err, 1, true)
    end)

    it("a hash function that returns an unhashable value is named as the culprit", function()
      local load_it = cr(function(x) return {} end, { hash_funcs = { table = function() return io.stdout end } })
      local ok, err = pcall(function() local r = load_it({}); return r end)
      assert.is_false(ok)
      assert.matches("hash_funcs['table'] of load_it returned a userdata 'FILE*' for argument 'x'", err, 1, true)
      assert.matches("which cannot be hashed", err, 1, true)
      assert.not_matches("table holding", err, 1, true)
      assert.not_matches("prefix the parameter", err, 1, true)
    end)

    it("a hash function that returns a table holding an unhashable value", function()
      local load_it = cr(function(x) return {} end,
        { hash_funcs = { Conn = function() return { co = coroutine.create(print) } end } })
      local ok, err = pcall(function() local r = load_it(setmetatable({}, { __name = "Conn" })); return r end)
      assert.is_false(ok)
      assert.matches("hash_funcs['Conn'] of load_it returned a table holding a thread for argument 'x'", err, 1, true)
    end)

    it("cache_resource.hash names the position and no fix it cannot take", function()
      local ok, err = pcall(H, 1, { io.stdout })
      assert.is_false(ok)
      assert.matches("cannot hash argument '#2' (a table holding a userdata 'FILE*') of cache_resource.hash", err,
        1, true)
    end)
  end)

  describe("callable objects as callbacks", function()
    -- a full userdata with a __call: a file handle given its own metatable
    local function callable_userdata(fn, name)
      local u = io.tmpfile()
      u:close()
      debug.setmetatable(u, { __call = function(_, ...) return fn(...) end, __name = name })
      return u
    end

    it("a callable hash_funcs value is used", function()
      local hasher = callable_userdata(function() return "one connection" end, "Hasher")
      local runs = 0
      local f = cr(function(conn) runs = runs + 1; return {} end, { hash_funcs = { userdata = hasher } })
      assert.equal(f(io.stdout), f(io.stderr))
      assert.equal(1, runs)
    end)

    it("a callable userdata counts for the identity by its kind, not its address", function()
      local body = function() return {} end
      local a = cr(body, { on_release = callable_userdata(function() end, "Release") })
      local b = cr(body, { on_release = callable_userdata(function() end, "Release") })
      local c = cr(body, { on_release = callable_userdata(function() end, "Other") })
      assert.equal(a(), b())
      assert.not_equal(a(), c())
    end)

    it("callable userdata are accepted as validate and on_release", function()
      local released = {}
      local validate = callable_userdata(function() return true end, "Check")
      local on_release = callable_userdata(function(v) released[#released + 1] = v end, "Release")
      local f = cr(function(x) return { x } end, { validate = validate, on_release = on_release })
      local a = f(1)
      assert.equal(a, f(1))
      cr.clear()
      assert.same({ a }, released)
    end)
  end)
end)
