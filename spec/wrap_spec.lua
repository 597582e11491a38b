-- Wrapping, options and function identity.
local cr = require "cache_resource"
local support = require "support"

describe("wrapping", function()
  before_each(support.reset)

  it("cache_resource(fn) returns a function that caches", function()
    local runs = { n = 0 }
    local f = cr(function(x) runs.n = runs.n + 1; return { x = x } end)
    assert.equal("function", type(f))
    local a, b = f(1), f(1)
    assert.equal(a, b)
    assert.equal(1, runs.n)
  end)

  it("cache_resource(fn, opts) applies the options", function()
    local released = {}
    local f = cr(function(x) return x * 10 end,
      { max_entries = 1, on_release = function(v) released[#released + 1] = v end })
    f(1); f(2)
    assert.same({ 10 }, released)
  end)

  it("cache_resource(opts)(fn) is the decorator-factory form", function()
    local released = {}
    local deco = cr { max_entries = 1, on_release = function(v) released[#released + 1] = v end }
    assert.equal("function", type(deco))
    local f = deco(function(x) return x + 1 end)
    f(1); f(2)
    assert.same({ 2 }, released)
  end)

  it("checks the decorator's options when they are written", function()
    assert.has_error(function() cr { tll = 5 } end, "cache_resource: unknown option 'tll' (did you mean 'ttl'?)")
  end)

  it("wraps a C function", function()
    local f = cr(math.max)
    assert.equal(7, f(3, 7, 5))
    assert.equal(7, f(3, 7, 5))
    local s = support.stat("f")
    assert.equal(1, s.misses)
    assert.equal(1, s.hits)
  end)

  it("wraps a callable table, whose __call gets the table as self", function()
    local obj = setmetatable({ base = 100 }, { __call = function(self, x) return self.base + x end })
    local f = cr(obj)
    assert.equal(101, f(1))
    assert.equal(101, f(1))
  end)

  it("gives each callable table its own cache, even with the same __call", function()
    local mt = { __call = function(self, x) return self.base + x end }
    local f1 = cr(setmetatable({ base = 1 }, mt))
    local f2 = cr(setmetatable({ base = 1000 }, mt))
    assert.equal(2, f1(1))
    assert.equal(1001, f2(1))
  end)

  it("skips the self parameter of a callable table when reading parameter names", function()
    local runs = 0
    local obj = setmetatable({}, { __call = function(self, x, _conn) runs = runs + 1; return x end })
    local f = cr(obj)
    f(1, io.stdout); f(1, io.stderr)
    assert.equal(1, runs)
  end)

  for _, bad in ipairs({ 42, "fn", true, io.stdout, {} }) do
    it("rejects a " .. type(bad) .. " to wrap with a bad argument error", function()
      if type(bad) == "table" then
        -- a plain table alone is options; with options after it, it is a bad fn
        assert.has_error(function() cr(bad, {}) end)
        local ok, err = pcall(cr, bad, {})
        assert.is_false(ok)
        assert.matches("bad argument #1 to 'cache_resource' %(function or callable table expected, got table%)", err)
      else
        local ok, err = pcall(cr, bad)
        assert.is_false(ok)
        assert.matches("bad argument #1 to 'cache_resource'", err)
        assert.matches(type(bad), err)
      end
    end)
  end

  it("rejects options that are not a table", function()
    local ok, err = pcall(cr, print, 5)
    assert.is_false(ok)
    assert.matches("bad argument #2 to 'cache_resource' %(options table expected, got number%)", err)
  end)

  it("rejects a wrapped call with no function", function()
    local ok, err = pcall(cr)
    assert.is_false(ok)
    assert.matches("bad argument #1", err)
  end)
end)

describe("options are checked", function()
  local function err_of(opts)
    local ok, err = pcall(cr, function() end, opts)
    assert.is_false(ok)
    return err
  end

  it("names an unknown option", function()
    assert.matches("cache_resource: unknown option 'tll'", err_of { tll = 1 })
    assert.matches("unknown option 'colour'", err_of { colour = 1 })
  end)

  it("rejects non-string option names", function()
    assert.matches("option names must be strings", err_of { 1 })
  end)

  local cases = {
    { { ttl = -1 }, "option 'ttl' must be >= 0" },
    { { ttl = true }, "option 'ttl' must be a number of seconds or a duration string" },
    { { ttl = "2 dayz" }, "cannot read the duration '2 dayz'" },
    { { ttl = "soon" }, "cannot read the duration 'soon'" },
    { { ttl = "" }, "cannot read the duration ''" },
    { { max_entries = 0 }, "option 'max_entries' must be an integer >= 1" },
    { { max_entries = 1.5 }, "option 'max_entries' must be an integer >= 1" },
    { { max_entries = "3" }, "option 'max_entries' must be an integer >= 1" },
    { { validate = 1 }, "option 'validate' must be a function" },
    { { on_release = "x" }, "option 'on_release' must be a function" },
    { { hash_funcs = 1 }, "option 'hash_funcs' must be a table of functions" },
    { { hash_funcs = { userdata = 1 } }, "must map each key to a function" },
    { { hash_funcs = { [1] = print } }, "keys must be type names, __name strings or metatables" },
    { { show_spinner = 1 }, "option 'show_spinner' must be a boolean or a string" },
    { { show_time = "yes" }, "option 'show_time' must be a boolean" },
    { { experimental_allow_widgets = 1 }, "option 'experimental_allow_widgets' must be a boolean" },
    { { scope = "user" }, "option 'scope' must be \"global\" or \"session\"" },
    { { name = "" }, "option 'name' must be a non%-empty string" },
    { { name = 5 }, "option 'name' must be a non%-empty string" },
  }
  for _, case in ipairs(cases) do
    local opts, msg = case[1], case[2]
    local k = next(opts)
    it("rejects " .. k .. " = " .. tostring(opts[k]), function()
      assert.matches(msg, err_of(opts))
    end)
  end

  it("accepts every option with a valid value", function()
    local f = cr(function() return 1 end, {
      ttl = "1h", max_entries = 4, validate = function() return true end,
      on_release = function() end, hash_funcs = { userdata = tostring },
      show_spinner = "Loading...", show_time = true, experimental_allow_widgets = false,
      scope = "global", name = "every-option",
    })
    assert.equal(1, f())
    assert.equal("every-option", support.stat("every-option").name)
  end)
end)

describe("function identity", function()
  before_each(support.reset)

  it("re-created closures (a script re-run) share one cache", function()
    local runs = { n = 0 }
    local function make()
      return cr(function(x) runs.n = runs.n + 1; return { x } end)
    end
    local a = make()(1)
    local b = make()(1)
    assert.equal(a, b)
    assert.equal(1, runs.n)
  end)

  it("the same chunk loaded twice finds the previous entries", function()
    local src = "local cr, runs = ...; return cr(function(x) runs.n = runs.n + 1; return {x} end)"
    local runs = { n = 0 }
    local f1 = load(src, "=app.lua")(cr, runs)
    local f2 = load(src, "=app.lua")(cr, runs)
    assert.equal(f1(5), f2(5))
    assert.equal(1, runs.n)
  end)

  it("an edited function body starts a new cache", function()
    local f1 = load("local cr = ...; return cr(function() return {1} end)", "=app.lua")(cr)
    local f2 = load("local cr = ...; return cr(function() return {2} end)", "=app.lua")(cr)
    assert.not_equal(f1(), f2())
    assert.same({ 2 }, f2())
  end)

  it("closures made in a loop over different strings do not share", function()
    local fs = {}
    for _, s in ipairs({ "a", "b", "c" }) do
      fs[s] = cr(function() return s end)
    end
    assert.equal("a", fs.a())
    assert.equal("b", fs.b())
    assert.equal("c", fs.c())
  end)

  it("closures over different numbers do not share either", function()
    local fs = {}
    for i = 1, 3 do fs[i] = cr(function() return i * 100 end) end
    assert.same({ 100, 200, 300 }, { fs[1](), fs[2](), fs[3]() })
  end)

  it("table and function upvalues are not part of the identity", function()
    local function make(tbl) return cr(function() return tbl end) end
    local t1, t2 = {}, {}
    assert.equal(t1, make(t1)())
    assert.equal(t1, make(t2)()) -- same identity: the first entry is found
  end)

  it("a captured scalar that changed starts a new cache, visible in stats", function()
    local counter = 1
    local function make() return cr(function() return counter end) end
    local before = #cr.stats()
    make()()
    counter = 2
    make()()
    assert.equal(before + 2, #cr.stats())
  end)

  it("name pins the identity across different code", function()
    local f1 = cr(function() return { "first" } end, { name = "pinned" })
    local f2 = cr(function() return { "second" } end, { name = "pinned" })
    assert.equal(f1(), f2())
    assert.same({ "first" }, f2())
  end)

  it("the same code wrapped with other options is another cache", function()
    local function body() return {} end
    local f1 = cr(body, { max_entries = 2 })
    local f2 = cr(body, { max_entries = 3 })
    assert.not_equal(f1(), f2())
  end)

  it("C functions: identity is the pointer and scalar upvalues", function()
    local a, b = cr(string.upper), cr(string.upper)
    a("x"); b("x")
    local hits = 0
    for _, s in ipairs(cr.stats()) do if s.name == "a" then hits = s.hits end end
    assert.equal(1, hits)
  end)
end)

describe("display name", function()
  before_each(support.reset)

  it("uses the name the caller used at the first call", function()
    local get_model = cr(function() return 1 end)
    get_model()
    assert.equal("get_model", cr.stats(get_model).name)
    assert.matches("wrap_spec%.lua:%d+%-%d+$", cr.stats(get_model).where)
  end)

  it("falls back to short_src:linedefined before any call", function()
    local f = cr(function() return 1 end)
    assert.matches("wrap_spec%.lua:%d+$", cr.stats(f).name)
  end)

  it("prefers the name option", function()
    local f = cr(function() return 1 end, { name = "loader" })
    f()
    assert.equal("loader", cr.stats(f).name)
  end)
end)

describe("a cached function is a plain function", function()
  before_each(support.reset)

  it("has type function and works with coroutine.wrap, coroutine.create, pcall and C callbacks", function()
    local runs = 0
    local f = cr(function(x) runs = runs + 1; return { x } end)
    assert.equal("function", type(f))
    local a = coroutine.wrap(f)(1)
    local ok, b = coroutine.resume(coroutine.create(f), 1)
    assert.is_true(ok)
    local ok2, c = pcall(f, 1)
    assert.is_true(ok2)
    assert.equal(a, b)
    assert.equal(a, c)
    assert.equal(1, runs)
    local t = { 3, 1, 2 }
    local cmp = cr(function(p, q) return p < q end)
    table.sort(t, cmp) -- a C function that checks for a function
    assert.same({ 1, 2, 3 }, t)
    assert.equal("function", type(cr { ttl = 1 }(function() end)))
  end)

  it("a cached function passed as an argument hashes by its cache's identity", function()
    local g1 = cr(function() return 1 end, { name = "g" })
    local g2 = cr(function() return 2 end, { name = "g" })
    local h = cr(function() return 3 end, { name = "h" })
    assert.equal(cr.hash(g1), cr.hash(g2))
    assert.are_not.equal(cr.hash(g1), cr.hash(h))
    local runs = 0
    local apply = cr(function(fn) runs = runs + 1; return fn() end)
    apply(g1); apply(g2); apply(h)
    assert.equal(2, runs)
  end)
end)

describe("stats(f), info(f) and peek(f, ...)", function()
  before_each(support.reset)

  it("stats(f) is f's row with every field", function()
    local f = cr(function(x) return x end, { name = "rowed", ttl = "1h", max_entries = 3 })
    f(1); f(1); f(2)
    local s = cr.stats(f)
    assert.equal("rowed", s.name)
    assert.equal("global", s.scope)
    assert.equal(3600, s.ttl)
    assert.equal(3, s.max_entries)
    assert.equal("foreground", s.refresh_mode)
    assert.equal(2, s.entries)
    assert.equal(1, s.hits)
    assert.equal(2, s.misses)
    for _, k in ipairs({ "stale_hits", "failures", "refreshes", "refresh_failures", "evictions", "expirations",
      "replay_bytes" }) do
      assert.equal(0, s[k], k)
    end
    local g = cr(function() end, { name = "plain" })
    assert.equal(math.huge, cr.stats(g).ttl)
    assert.equal(math.huge, cr.stats(g).max_entries)
  end)

  it("info(f) adds the options, durations in seconds", function()
    local v = function() return true end
    local f = cr(function() end, { name = "informed", ttl = "1m30s", validate = v, show_spinner = "Loading" })
    local i = cr.info(f)
    assert.equal("informed", i.name)
    assert.equal(90, i.options.ttl)
    assert.equal(v, i.options.validate)
    assert.equal("Loading", i.options.show_spinner)
    assert.equal("informed", i.options.name)
  end)

  it("peek(f, ...) returns the remaining lifetime and the values without computing or counting", function()
    local clock = support.fake_clock(100)
    local runs = 0
    local f = cr(function(x) runs = runs + 1; return x * 2, "two" end, { ttl = 10, name = "peeked" })
    assert.equal(0, select("#", cr.peek(f, 1)))
    f(1)
    clock.now = 104
    local left, a, b = cr.peek(f, 1)
    assert.equal(6, left)
    assert.equal(2, a)
    assert.equal("two", b)
    assert.equal(1, runs)
    assert.equal(0, cr.stats(f).hits)
    assert.equal(1, cr.stats(f).misses)
    clock.now = 111
    assert.equal(0, select("#", cr.peek(f, 1)))
    local g = cr(function() return nil end, { name = "forever" })
    g()
    local l2, v = cr.peek(g)
    assert.equal(math.huge, l2)
    assert.is_nil(v)
    assert.equal(2, select("#", cr.peek(g)))
  end)

  it("peek does not change recency", function()
    local released = {}
    local f = cr(function(x) return x end,
      { max_entries = 2, on_release = function(v) released[#released + 1] = v end })
    f(1); f(2)
    cr.peek(f, 1)  -- a call would make 1 the newest; peek must not
    f(3)
    assert.same({ 1 }, released)
  end)
end)
