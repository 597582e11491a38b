-- Leak and stress checks (the reliability gates): nothing lost, nothing leaked.
local cr = require "cache_resource"
local support = require "support"

-- Registry slots holding something other than a number: luaL_unref leaves
-- integer free-list links behind, so those are not counted.
local function registry_objects()
  local n = 0
  for _, v in pairs(debug.getregistry()) do
    if type(v) ~= "number" then n = n + 1 end
  end
  return n
end

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
    local f = cr(function(k) coroutine.yield(); return { k } end, { on_release = function() error("never released") end })
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
