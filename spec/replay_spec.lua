-- Recording UI calls into a C buffer and replaying them.
local cr = require "cache_resource"
local support = require "support"

for _, mode in ipairs(support.REPLAY_MODES) do
  describe("replay, " .. mode.name, function()
    local shown, text
    before_each(function()
      support.reset()
      cr.set_replay_compile(mode.compile_after)
      shown = {}
      text = cr.replayable(function(s) shown[#shown + 1] = tostring(s) end, "text")
    end)

    it("replayable(fn) calls fn live and returns its results", function()
      local r = cr.replayable(function(a, b) return a + b, "sum" end)
      local x, y = r(2, 3)
      assert.equal(5, x)
      assert.equal("sum", y)
    end)

    it("the same fn gives the same replayable", function()
      local function f() end
      assert.equal(cr.replayable(f), cr.replayable(f))
    end)

    it("rejects a non-function", function()
      assert.has_error(function() cr.replayable(42) end)
    end)

    it("Streamlit's case: foo(1); text('---'); foo(1) shows 1, ---, 1", function()
      local foo = cr(function(x) text(x); return x end)
      foo(1); text("---"); foo(1)
      assert.same({ "1", "---", "1" }, shown)
    end)

    it("Streamlit's nested case propagates inner replays into outer entries", function()
      local inner = cr(function(i) text(i); return i end)
      local outer = cr(function(i) inner(i); text(i + 10); return i end)
      outer(1); outer(1); text("---"); inner(2); outer(2); text("---"); outer(3); inner(3)
      assert.same({ "1", "11", "1", "11", "---", "2", "2", "12", "---", "3", "13", "3" }, shown)
    end)

    it("replays in order before the values are returned", function()
      local order = {}
      local mark = cr.replayable(function(s) order[#order + 1] = s end)
      local f = cr(function() mark("a"); mark("b"); return "v" end)
      f()
      order = {}
      local v = f()
      order[#order + 1] = v
      assert.same({ "a", "b", "v" }, order)
    end)

    it("copies recorded arguments: later mutation of the caller's table changes nothing", function()
      local got = {}
      local show = cr.replayable(function(t) got[#got + 1] = t.label .. "/" .. #t.items end)
      local data = { label = "before", items = { 1, 2 } }
      local f = cr(function() show(data); return true end)
      f()
      data.label = "after"
      data.items[3] = 3
      f()
      assert.same({ "before/2", "before/2" }, got)
    end)

    it("records nil, booleans, integers, floats, strings and nested tables exactly", function()
      local got = {}
      local show = cr.replayable(function(...) got[#got + 1] = table.pack(...) end)
      local f = cr(function()
        show(nil, false, true, 42, 2.5, -0.0, "a\0b", { x = { y = { 1, 2 } }, [3] = "three" })
        return 1
      end)
      f(); f()
      assert.same(got[1], got[2])
      assert.equal(8, got[2].n)
      assert.equal("integer", math.type(got[2][4]))
      assert.equal("float", math.type(got[2][5]))
      assert.is_true(1 / got[2][6] < 0) -- -0.0 survives the copy
      assert.equal("three", got[2][8][3])
    end)

    it("replays edge values bit for bit: NaN signs, infinities, extreme integers, any byte", function()
      local bits = function(x) return string.pack("<d", x) end
      local nan = 0 / 0
      local values = { nan, -nan, math.huge, -math.huge, math.mininteger, math.maxinteger, -1, 2 ^ 53,
        1e-310, 5e-324, 1e300, -2 ^ 63, math.pi, 1 / 3, 0.1, -0.0, "", "\0\1\255\"\\\r\n]]\z", string.rep("é", 300),
        { [true] = false, [1.5] = "x", [-7] = { [0] = nan }, ["k\0"] = math.mininteger } }
      local got = {}
      local show = cr.replayable(function(...) got[#got + 1] = table.pack(...) end)
      local f = cr(function() show(table.unpack(values, 1, #values)); return 1 end)
      for _ = 1, 3 do f() end
      local function same(a, b)
        if math.type(a) == "float" then return math.type(b) == "float" and bits(a) == bits(b) end
        if type(a) ~= "table" then return math.type(a) == math.type(b) and a == b end
        if type(b) ~= "table" then return false end
        for k, v in pairs(a) do if not same(v, rawget(b, k)) then return false end end
        for k in pairs(b) do if rawget(a, k) == nil then return false end end
        return true
      end
      for run = 2, 3 do
        assert.equal(#values, got[run].n)
        for i = 1, #values do
          assert.is_true(same(values[i], got[run][i]), "value " .. i .. " changed on replay " .. run)
        end
      end
      local tbl = #values -- the table, last
      assert.are_not.equal(values[tbl], got[2][tbl]) -- a fresh copy every replay
      assert.are_not.equal(got[2][tbl], got[3][tbl])
    end)

    it("copies a table argument with its cycles and shared subtables, fresh for every replay", function()
      local got = {}
      local show = cr.replayable(function(t) got[#got + 1] = t end, "show")
      local t = { name = "loop", a = {} }
      t.self, t.b = t, t.a
      local f = cr(function() show(t); return true end)
      f(); f(); f()
      assert.equal(3, #got)
      for i = 2, 3 do
        assert.are_not.equal(t, got[i])
        assert.equal(got[i], got[i].self)
        assert.equal(got[i].a, got[i].b)
        assert.equal("loop", got[i].name)
      end
      assert.are_not.equal(got[2], got[3])
    end)

    it("keeps non-copyable arguments by reference, alive across a full collect", function()
      local got = {}
      local show = cr.replayable(function(v) got[#got + 1] = v end)
      local f = cr(function()
        show(setmetatable({ tag = "obj" }, { __name = "Thing" }))
        show(function() return "fn" end)
        return 1
      end)
      f()
      local obj, fn = got[1], got[2]
      collectgarbage(); collectgarbage()
      f()
      assert.equal(obj, got[3])
      assert.equal(fn, got[4])
      assert.equal("obj", got[3].tag)
      assert.equal("fn", got[4]())
    end)

    it("releases references held by records when the entry goes", function()
      local show = cr.replayable(function() end)
      local weak = setmetatable({}, { __mode = "v" })
      local f = cr(function()
        local obj = setmetatable({}, {})
        weak[1] = obj
        show(obj)
        return 1
      end)
      f()
      collectgarbage()
      assert.is_not_nil(weak[1])
      cr.clear(f)
      collectgarbage(); collectgarbage()
      assert.is_nil(weak[1])
    end)

    it("discards the records of a failed computation", function()
      local n = 0
      local f = cr(function() text("attempt"); n = n + 1; if n == 1 then error("no") end; return 1 end)
      assert.has_error(function() f() end)
      f(); f()
      assert.same({ "attempt", "attempt", "attempt" }, shown) -- 2 live runs + 1 replay
    end)

    it("records per coroutine: UI calls of another coroutine while suspended are not recorded", function()
      local f = cr(function() text("mine"); coroutine.yield(); text("mine again"); return 1 end)
      local co = coroutine.create(function() return f() end)
      coroutine.resume(co)
      text("other coroutine")
      coroutine.resume(co)
      shown = {}
      f()
      assert.same({ "mine", "mine again" }, shown)
    end)

    it("re-binds values returned by recorded calls (a block made inside the function)", function()
      local blocks = {}
      local container = cr.replayable(function()
        local b = { lines = {} }
        blocks[#blocks + 1] = b
        return b
      end)
      local write_to = cr.replayable(function(b, s) b.lines[#b.lines + 1] = s end)
      local f = cr(function() local b = container(); write_to(b, "hello"); return 1 end)
      f(); f()
      assert.equal(2, #blocks)
      assert.same({ "hello" }, blocks[1].lines)
      assert.same({ "hello" }, blocks[2].lines)
    end)

    it("replays 100000 records in a loop, without growing the C stack per record", function()
      local n = 0
      local tick = cr.replayable(function() n = n + 1 end)
      local f = cr(function() for i = 1, 100000 do tick(i) end; return "done" end)
      f()
      n = 0
      assert.equal("done", f())
      assert.equal(100000, n)
    end)

    it("replayed calls may yield", function()
      local slow = cr.replayable(function(s) coroutine.yield("ui"); shown[#shown + 1] = s end)
      local f = cr(function() slow("x"); return "v" end)
      local co = coroutine.wrap(function() return f() end)
      assert.equal("ui", co())
      assert.equal("v", co())
      co = coroutine.wrap(function() return f() end)
      assert.equal("ui", co())
      assert.equal("v", co())
      assert.same({ "x", "x" }, shown)
    end)

    it("a yield mid-replay keeps every value, back-reference and the replay's name", function()
      local blocks, names = {}, {}
      local container = cr.replayable(function() local b = { lines = {} }; blocks[#blocks + 1] = b; return b end)
      local write_to = cr.replayable(function(b, s)
        coroutine.yield("paused")
        names[#names + 1] = cr.replaying() or "none"
        b.lines[#b.lines + 1] = s
      end)
      local page = cr(function()
        local b = container(); write_to(b, "one"); write_to(b, "two"); return 1, nil, "three"
      end)
      local function drive()
        local co = coroutine.wrap(function() return table.pack(page()) end)
        local r = co()
        while r == "paused" do r = co() end
        return r
      end
      local first, second = drive(), drive()
      assert.same({ n = 3, 1, nil, "three" }, first)
      assert.same(first, second)
      assert.equal(2, #blocks)
      assert.same({ "one", "two" }, blocks[2].lines)
      assert.same({ "page", "page" }, { names[3], names[4] })
    end)

    it("a replayed call that clears the cache does not cut the replay short", function()
      local f
      local clearer = cr.replayable(function(s) shown[#shown + 1] = s; if f then cr.clear(f) end end)
      f = cr(function() clearer("a"); text("b"); clearer("c"); return "v" end)
      local g = f
      f = nil
      g()               -- computes: nothing to clear yet
      f = g
      shown = {}
      assert.equal("v", g()) -- hit: the first replayed call releases the entry
      assert.same({ "a", "b", "c" }, shown)
      assert.equal(0, support.stat("g").entries)
    end)

    it("a coroutine abandoned mid-replay leaks nothing once the entry goes", function()
      local weak = setmetatable({}, { __mode = "v" })
      local pause = cr.replayable(function() coroutine.yield() end)
      local show = cr.replayable(function() end)
      local f = cr(function() local obj = {}; setmetatable(obj, {}); weak[1] = obj; show(obj); pause(); return 1 end)
      local first = coroutine.wrap(function() return f() end)
      first()
      assert.equal(1, first())
      local threads = { coroutine.create(function() return f() end) } -- dropped below
      assert.is_true(coroutine.resume(threads[1])) -- suspended inside the replay
      cr.clear(f)
      collectgarbage(); collectgarbage()
      assert.is_not_nil(weak[1])           -- the suspended replay still holds its records
      threads[1] = nil
      collectgarbage(); collectgarbage()
      assert.is_nil(weak[1])
    end)

    it("a replay still happens on a hit that passed validate", function()
      local f = cr(function() text("shown"); return 1 end, { validate = function() return true end })
      f(); f()
      assert.same({ "shown", "shown" }, shown)
    end)

    it("stats().replay_bytes reports buffer bytes, back to 0 after clear", function()
      local f = cr(function(x) text(x); return x end)
      f("abc")
      local bytes = support.stat("f").replay_bytes
      assert.is_true(bytes > 3)
      f("de")
      assert.is_true(support.stat("f").replay_bytes > bytes)
      cr.clear(f)
      assert.equal(0, support.stat("f").replay_bytes)
    end)

    it("computing() and replaying() name the function, nil outside", function()
      local seen = {}
      local probe = cr.replayable(function() seen[#seen + 1] = { cr.computing(), cr.replaying() } end)
      local loader = cr(function() probe(); return 1 end)
      assert.is_nil(cr.computing())
      loader(); loader()
      assert.same({ "loader" }, seen[1])
      assert.same({ nil, "loader" }, { seen[2][1], seen[2][2] })
    end)
  end)
end

describe("set_replay_compile", function()
  before_each(support.reset)

  local function replayed_by()
    cr.clear() -- the same closure, re-created, would hit the last call's entry
    local seen = {}
    local probe = cr.replayable(function()
      seen[#seen + 1] = debug.traceback():find("cache_resource replay", 1, true) and "compiled" or "C loop"
    end)
    local f = cr(function() probe(); return 1 end)
    for _ = 1, 5 do f() end
    return seen
  end

  it("compiles a buffer after n replays, and 0 or false never compiles", function()
    cr.set_replay_compile(3)
    assert.same({ "C loop", "C loop", "C loop", "compiled", "compiled" }, replayed_by())
    cr.set_replay_compile(0)
    assert.same({ "C loop", "C loop", "C loop", "C loop", "C loop" }, replayed_by())
    cr.set_replay_compile(false)
    assert.same({ "C loop", "C loop", "C loop", "C loop", "C loop" }, replayed_by())
  end)

  it("rejects what is not a count", function()
    assert.has_error(function() cr.set_replay_compile(-1) end,
      "bad argument #1 to 'set_replay_compile' (a replay count from 0 to 10^9 (0: never compile))")
    assert.has_error(function() cr.set_replay_compile("often") end)
    assert.has_error(function() cr.set_replay_compile(true) end)
  end)
end)
