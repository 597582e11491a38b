-- Leak and stress checks (the reliability gates): nothing lost, nothing leaked.
local cr = require "cache_resource"
local support = require "support"

-- Registry slots holding something other than a number: luaL_unref leaves
-- integer free-list links behind, so those are not counted.
-- The interpreter running this suite, for the specs that need a process of their own.
local LUA = os.getenv("CR_LUA") or ("lua" .. _VERSION:match("%d+%.%d+"))

local registry_objects = support.registry_objects

describe("leaks", function()
  before_each(support.reset)

  it("references return to baseline after 10^5 insert/evict/expire/clear/error cycles", function()
    local clock = support.fake_clock(0)
    local text = cr.replayable(function() end, "leak.text")
    local f = cr(function(k, mode)
      text({ k = k }, setmetatable({}, {}))      -- a copied and a referenced argument
      if mode == "fail" then error("planned failure") end
      return { k }, "second value"
    end, { max_entries = 50, ttl = 5, on_release = function() end })
    -- warm the caches of the Lua side (interned strings, closures), then count
    f(0); cr.clear(f); collectgarbage(); collectgarbage()
    local refs0, objects0 = cr.live_refs(), registry_objects()
    for i = 1, 100000 do
      local r = i % 10
      if i % 1000 == 0 then clock.now = clock.now + 10   -- the next call expires everything
      elseif r == 1 then pcall(f, i, "fail")             -- error: stores nothing
      elseif r == 2 then cr.clear(f, i - 2)                   -- keyed clear
      elseif r == 3 and i % 1000 == 3 then cr.clear()     -- full clear
      end
      f(i % 300)                                          -- hits, misses and evictions
    end
    cr.clear()
    collectgarbage(); collectgarbage()
    assert.equal(refs0, cr.live_refs())
    assert.equal(objects0, registry_objects())
    local s = support.stat("f")
    assert.equal(0, s.entries)
    assert.equal(0, s.replay_bytes)
    assert.is_true(s.evictions > 0 and s.expirations > 0)
  end)

  it("released values are collectable", function()
    local weak = setmetatable({}, { __mode = "v" })
    local f = cr(function(k) local v = { k }; weak[k] = v; return v end, { max_entries = 10 })
    for i = 1, 100 do f(i) end
    collectgarbage(); collectgarbage()
    local alive = 0
    for _ in pairs(weak) do alive = alive + 1 end
    assert.equal(10, alive)  -- only what the cache still holds
    cr.clear()
    collectgarbage(); collectgarbage()
    assert.is_nil(next(weak))
  end)

  it("an abandoned computing coroutine is collected and its key freed", function()
    local f = cr(function() coroutine.yield(); return 1 end)
    do
      local co = coroutine.create(function() return f() end)
      coroutine.resume(co)
    end
    collectgarbage(); collectgarbage()
    -- the owner is gone: a new call computes instead of waiting forever
    cr.set_waiter(function() error("nobody should wait") end)
    local co = coroutine.wrap(function() return f() end)
    co()
    assert.equal(1, co())
  end)
end)

describe("stress", function()
  before_each(support.reset)

  it("10^6 misses with max_entries keep entries and memory bounded", function()
    local f = cr(function(k) return k end, { max_entries = 1000 })
    for i = 1, 1000 do f(i) end
    collectgarbage(); collectgarbage()
    local heap0 = collectgarbage("count")
    for i = 1, 1000000 do f(i) end
    collectgarbage(); collectgarbage()
    local s = support.stat("f")
    assert.equal(1000, s.entries)
    assert.equal(999000, s.evictions)
    assert.is_true(collectgarbage("count") - heap0 < 256, "the Lua heap grew")
  end)

  it("the same key from 100 coroutines with a waiter runs fn once", function()
    local runs = { n = 0 }
    local f = cr(function() runs.n = runs.n + 1; for _ = 1, 5 do coroutine.yield() end; return {} end)
    cr.set_waiter(function() coroutine.yield() end)
    local cos, results = {}, {}
    for i = 1, 100 do cos[i] = coroutine.create(function() return f() end) end
    local alive = 100
    while alive > 0 do
      for i, co in ipairs(cos) do
        if coroutine.status(co) == "suspended" then
          local ok, v = coroutine.resume(co)
          assert.is_true(ok, v)
          if coroutine.status(co) == "dead" then results[i] = v; alive = alive - 1 end
        end
      end
    end
    assert.equal(1, runs.n)
    for i = 2, 100 do assert.equal(results[1], results[i]) end
  end)

  it("clear during a suspended computation, repeatedly, loses and leaks nothing", function()
    local refs0 = cr.live_refs()
    local f = cr(function(k) coroutine.yield(); return { k } end,
      { on_release = function() error("never released") end })
    for i = 1, 1000 do
      local co = coroutine.create(function() return f(i) end)
      coroutine.resume(co)
      if i % 2 == 0 then cr.clear(f) else cr.clear() end
      local ok, v = coroutine.resume(co)
      assert.is_true(ok)
      assert.same({ i }, v)
    end
    assert.equal(0, support.stat("f").entries)
    assert.equal(refs0, cr.live_refs())
  end)

  -- Each callback raising at every call: the cache stays consistent.
  local function counter() return { n = 0 } end
  for _, where in ipairs({ "fn", "validate", "hash_funcs", "on_release" }) do
    it("survives " .. where .. " raising on every call", function()
      local refs0 = cr.live_refs()
      local calls = counter()
      local function boom() calls.n = calls.n + 1; error(where .. " failed") end
      local opts = { max_entries = 3 }
      local body = function(k) return { k } end
      if where == "fn" then body = function() boom() end
      elseif where == "validate" then opts.validate = boom
      elseif where == "hash_funcs" then opts.hash_funcs = { table = boom }
      elseif where == "on_release" then opts.on_release = boom end
      local f = cr(body, opts)
      local warnings = support.capture_warnings(function()
        for i = 1, 200 do
          -- 3 keys fit the cache (hits reach validate); 7 cycle through it (evictions)
          local arg = where == "hash_funcs" and { i } or i % (where == "on_release" and 7 or 3)
          pcall(f, arg)
          if i % 50 == 0 then cr.clear(f) end
        end
        cr.clear()
      end)
      assert.is_true(calls.n > 0)
      if where == "on_release" then assert.is_true(#warnings > 0) end
      assert.equal(0, support.stat("f").entries)
      assert.equal(refs0, cr.live_refs())
      if where ~= "fn" then assert.same({ 1 }, f(1)) end -- still usable
    end)
  end
end)

-- Each of these crashed (under ASan, or outright), leaked, or never
-- returned before the store kept its pointers only across code that
-- cannot call Lua; the matrix in reentrancy_spec.lua covers the rest.
describe("callbacks in the middle of C work", function()
  before_each(support.reset)
  after_each(function()
    cr.set_widget_source(nil)
    support.reset()
  end)

  it("a clock that ends the session while an entry is stored: values returned, nothing stored", function()
    local ending = false
    cr.set_clock(function()
      if ending then ending = false; cr.end_session("s") end
      return 0
    end)
    local f = cr(function(k) ending = true; return { k } end, { scope = "session", ttl = 10 })
    cr.set_session("s")
    assert.same({ 1 }, f(1))
    assert.is_nil(cr.session())
    cr.set_session("s")
    assert.equal(0, cr.stats(f).entries)
  end)

  it("an on_release that ends the session while a replaced entry is released", function()
    local released, nested = {}, false
    local f
    cr.set_clock(function()
      if nested then nested = false; f(1) end -- stores key 1 under the store step of key 1
      return 0
    end)
    f = cr(function(k) return { k } end, { scope = "session", ttl = 10, on_release = function(v)
      released[#released + 1] = v
      cr.end_session("s")
    end })
    cr.set_session("s")
    nested = true
    local v = f(1)
    assert.same({ 1 }, v)
    -- the nested call's entry, replaced (its release ends the session), then ours
    assert.equal(2, #released)
    assert.not_equal(v, released[1])
    assert.equal(v, released[2])
    cr.set_session("s")
    assert.equal(0, cr.stats(f).entries)
  end)

  it("a widget source that ends the session during the store step", function()
    local runs = 0
    local f = cr(function(k)
      runs = runs + 1
      cr.widget_used("w" .. runs, runs) -- each run reads another widget
      return { k, runs }
    end, { scope = "session", experimental_allow_widgets = true })
    cr.set_session("s")
    assert.same({ 5, 1 }, f(5)) -- stored under the widgets {w1}
    local asked = {}
    cr.set_widget_source(function(id)
      asked[#asked + 1] = id
      if #asked == 2 then cr.end_session("s") end
      return 0
    end)
    -- the lookup asks for w1 (0: a miss), the run reads w2, the store step
    -- asks for w1 again and ends the session: returned, not stored
    assert.same({ 5, 2 }, f(5))
    assert.same({ "w1", "w1" }, asked)
    assert.is_nil(cr.session())
    cr.set_session("s")
    assert.equal(0, cr.stats(f).entries)
  end)

  it("a clock that clears everything before the expiry heap is read", function()
    local reads, clear_at = 0, -1
    cr.set_clock(function()
      reads = reads + 1
      if reads == clear_at then cr.clear() end
      return 0
    end)
    local f = cr(function(k) return { k } end, { ttl = 10, validate = function() return true end })
    f(1); f(2)
    -- the call reads the clock first on entry, then again on the slow path
    -- (validate), which clears: the heap is read after it, not before
    reads, clear_at = 0, 2
    assert.same({ 1 }, f(1))
    reads, clear_at = 0, 1
    assert.equal(0, cr.expire())
    assert.same({ 2 }, f(2))
  end)

  it("cached functions and the module refuse to run after lua_close freed the module", function()
    local dir = os.getenv("CR_BUILD") or "build"
    local script = ([[
      package.cpath = "./%s/?.so;" .. package.cpath
      local out = {}
      -- made before the module: finalized after the module's state
      local early = setmetatable({}, { __gc = function()
        local function try(name, fn, ...)
          local ok, err = pcall(fn, ...)
          io.stdout:write(name, " ", tostring(ok), " ", tostring(err), "\n")
        end
        try("call", F, 1)
        try("hit", F, 2)
        try("resume", function() assert(coroutine.resume(CO)) end) -- suspended while computing
        try("set_session", CR.set_session, "late")
        try("replayable", CR.replayable, print)
        try("hash", CR.hash, 1)
        try("wrap", CR, print)
        try("clear", CR.clear)
      end })
      CR = require "cache_resource"
      F = CR(function(k) return { k } end)
      F(2)
      local Y = CR(function(k) coroutine.yield(); return { k } end)
      CO = coroutine.create(function() return Y(1) end)
      coroutine.resume(CO)
    ]]):format(dir)
    local p = io.popen(LUA .. " -e '" .. script:gsub("'", "'\\''") .. "' 2>&1; echo exit=$?")
    local out = p:read("a")
    p:close()
    assert.matches("exit=0", out)
    for _, name in ipairs({ "call", "hit", "resume", "set_session", "replayable", "hash", "wrap", "clear" }) do
      assert.matches(name .. " false [^\n]*closed", out)
    end
  end)
end)

describe("every clear ends", function()
  before_each(support.reset)

  -- on_release puts each released key back (a re-warming cache)
  local function rewarming(opts)
    local f
    local released = 0
    opts.on_release = function(v)
      released = released + 1
      if released <= 1000 then f(v[1]) end
    end
    f = cr(function(k) return { k } end, opts)
    return f, function() return released end
  end

  it("clear() releases the entries present when it started, once each", function()
    local f, released = rewarming({})
    for k = 1, 5 do f(k) end
    cr.clear()
    assert.equal(5, released())
    assert.equal(5, cr.stats(f).entries) -- the re-warmed ones stay
  end)

  it("clear(f) does too, in every session", function()
    local released = 0
    local f
    f = cr(function(k) return { k, cr.session() } end, { scope = "session", on_release = function(v)
      released = released + 1
      if released <= 1000 then -- put it back, in its own session
        local current = cr.session()
        cr.set_session(v[2]); f(v[1]); cr.set_session(current)
      end
    end })
    for _, s in ipairs({ "a", "b", "c" }) do
      cr.set_session(s)
      f(1); f(2)
    end
    cr.set_session(nil)
    cr.clear(f) -- no session set: every session's entries
    assert.equal(6, released)
    assert.equal(6, cr.stats(f).entries) -- the re-warmed ones stay, in their sessions
  end)

  it("expiry with ttl = 0 and a re-warming on_release ends", function()
    support.fake_clock(0)
    local f, released = rewarming({ ttl = 0 })
    f(1); f(2)
    cr.expire()
    assert.is_true(released() < 1000, "released " .. released())
  end)
end)

describe("bounded memory", function()
  before_each(support.reset)
  after_each(function()
    cr.set_widget_source(nil)
    support.reset()
  end)

  it("the widget sets of a widget cache are pruned with its entries and dropped on clear", function()
    -- in a process of its own: registry counts there move only with this cache
    local dir = os.getenv("CR_BUILD") or "build"
    local script = ([[
      package.cpath = "./%s/?.so;" .. package.cpath
      local cr = require "cache_resource"
      local function registry_objects()
        local n = 0
        for _, v in pairs(debug.getregistry()) do
          if type(v) ~= "number" then n = n + 1 end
        end
        return n
      end
      cr.set_widget_source(function() return 0 end)
      local f = cr(function(k)
        cr.widget_used("w", 0)
        return k
      end, { experimental_allow_widgets = true, max_entries = 10 })
      collectgarbage(); collectgarbage()
      local objects0 = registry_objects()
      for k = 1, 100 do f(k) end
      collectgarbage(); collectgarbage()
      local heap0, objects1 = collectgarbage("count"), registry_objects()
      for k = 101, 5100 do f(k) end
      collectgarbage(); collectgarbage()
      local grown, objects2 = collectgarbage("count") - heap0, registry_objects()
      local hit = f(5100) == 5100 and cr.stats(f).hits == 1
      cr.clear()
      collectgarbage(); collectgarbage()
      print(objects0, objects1, objects2, registry_objects(), grown, hit, cr.stats(f).entries)
    ]]):format(dir)
    local p = io.popen(LUA .. " -e '" .. script:gsub("'", "'\\''") .. "' 2>&1")
    local out = p:read("a")
    p:close()
    local o0, o1, o2, o3, grown, hit, entries = out:match("^(%d+)%s+(%d+)%s+(%d+)%s+(%d+)%s+(%S+)%s+(%S+)%s+(%d+)")
    assert.is_not_nil(o0, out)
    assert.is_true(tonumber(grown) < 64, "the Lua heap grew by " .. grown .. " KB")
    assert.equal(o1, o2)       -- 10 live entries either way: pruned as they went
    assert.equal("true", hit)  -- the sets of the live keys are kept
    assert.equal("0", entries)
    assert.equal(o0, o3)       -- and the table itself goes with the last entry
  end)

  it("recorded UI calls are freed when storing the result fails", function()
    local text = cr.replayable(function() end, "bounded.text")
    local f = cr(function(k)
      text(k, function() end) -- an argument kept by reference
      return k
    end, { ttl = 10 })
    f(0); cr.clear(); collectgarbage(); collectgarbage()
    local objects0 = registry_objects()
    cr.set_clock(function() error("clock broken", 0) end)
    for k = 1, 20 do
      local ok, err = pcall(f, k)
      assert.is_false(ok)
      assert.equal("clock broken", err)
    end
    cr.set_clock(nil)
    collectgarbage(); collectgarbage()
    assert.equal(objects0, registry_objects())
  end)

  it("recorded UI calls are freed by their entry at once, not by a finalizer Lua may skip", function()
    local text = cr.replayable(function() end, "bounded.text2")
    local f = cr(function(k)
      text(k, function() end) -- an argument kept by reference
      return k
    end)
    f(0); cr.clear(); collectgarbage(); collectgarbage()
    local objects0 = registry_objects()
    for k = 1, 10 do f(k) end
    assert.is_true(registry_objects() > objects0)
    cr.clear(f)
    -- no collection in between: Lua skips a finalizer that would hit the
    -- C stack limit, so a buffer freed only by __gc could be lost
    assert.equal(objects0, registry_objects())
  end)
end)
