-- cache_data with persist on a Redis store, as replicas of an app use it:
-- processes sharing one server, a server killed and restarted, a server
-- that stalls while other coroutines of the event loop run, a wrong
-- password. Needs redis-server (`.ci/run` installs it).
local rs = require "redis_support"

if not rs.available then
  pending("cache_data on a Redis store [skipped: " .. rs.MISSING .. "]")
  return
end

local cr = require "cache_resource"
local cqueues = require "cqueues"
local redis = require "cache_resource.redis"
local support = require "support"
local ps = require "persist_support"
local cache_data = cr.data

local fresh_prefix = rs.fresh_prefix

local function pack(...) return table.pack(...) end

describe("cache_data on a Redis store", function()
  local server, own, root, remove_root
  setup(function() server, own = rs.shared() end)
  teardown(function() if own then server:stop() end end)
  before_each(function()
    support.reset()
    root, remove_root = support.temp_dir()
  end)
  after_each(function()
    support.reset()
    remove_root()
  end)

  local function store_expr(prefix)
    return ("require('cache_resource.redis').connect{ port = %d, prefix = %q }"):format(server.port, prefix)
  end

  describe("shared by three processes", function()
    it("one computes, the others get exact copies from the store", function()
      local code = ([[
        local cr = require "cache_resource"
        local ps = require "persist_support"
        local socket = require "socket"
        local store = assert(%s)
        local me, dir = tonumber(arg[1]), %q
        local runs = 0
        local f = cr.data(function(i) runs = runs + 1; return ps.value(i) end, { persist = store, ttl = 600 })
        local function exists(path)
          local h = io.open(path)
          if h then h:close() end
          return h ~= nil
        end
        if me ~= 1 then
          local deadline = socket.gettime() + 30
          while not exists(dir .. "/stored") and socket.gettime() < deadline do socket.sleep(0.01) end
        end
        local bad = 0
        for i = 1, 20 do
          if not ps.same(table.pack(ps.value(i)), table.pack(f(i))) then bad = bad + 1 end
        end
        if me == 1 then assert(io.open(dir .. "/stored", "w")):close() end
        local s = cr.stats(f)
        ps.emit({ runs = runs, bad = bad, store_hits = s.store_hits, store_writes = s.store_writes,
          persist = s.persist })
      ]]):format(store_expr(fresh_prefix()), root)
      local outs, statuses = support.lua_children(code, 3, root .. "/app.lua")
      local r = {}
      for i = 1, 3 do
        assert.equal(0, statuses[i], outs[i])
        r[i] = ps.results(outs[i])
        assert.equal(0, r[i].bad)
        assert.equal(("redis://127.0.0.1:%d/0"):format(server.port), r[i].persist)
      end
      assert.same({ 20, 0, 20 }, { r[1].runs, r[1].store_hits, r[1].store_writes })
      for i = 2, 3 do assert.same({ 0, 20, 0 }, { r[i].runs, r[i].store_hits, r[i].store_writes }) end
    end)

    it("a clear in one reaches the others within a second", function()
      support.write_file(root .. "/count", "3")
      local code = ps.clear_children(store_expr(fresh_prefix()), root)
      local outs, statuses = support.lua_children(code, 3, root .. "/app.lua")
      local slack = rs.SLOWDOWN > 1 and 2 * rs.SLOWDOWN or 0.5
      for i = 2, 3 do
        assert.equal(0, statuses[i], outs[i])
        local r = ps.results(outs[i])
        assert.equal("computed by 1 #1", r.first)
        assert.matches("^computed by [23] #1$", r.after)
        assert.equal(0, r.store_errors)
        assert.is_true(r.delay <= 1 + slack, "the clear took " .. r.delay .. " s to arrive")
      end
    end)

    it("two processes missing the same keys at once both finish with exact values", function()
      local code = ps.racing_children(store_expr(fresh_prefix()), root, 200, 2)
      local outs, statuses = support.lua_children(code, 2, root .. "/app.lua")
      ps.check_race(assert, outs, statuses, 200)
    end)
  end)

  it("keeps answering from memory while its server is down, warns once, and shares again after a restart",
    function()
      local own_server = rs.start()
      local prefix = fresh_prefix()
      local store = redis.connect { port = own_server.port, prefix = prefix, timeout = 0.5 }
      local runs = 0
      local f = cache_data(function(i)
        runs = runs + 1
        return ps.value(i)
      end, { persist = store, name = "replicated" })
      local warnings = support.capture_warnings(function()
        for i = 1, 3 do f(i) end
        assert.equal(3, cr.stats(f).store_writes)
        own_server:kill()
        local t0 = support.now()
        while support.now() - t0 < 1.5 do -- hits, and the generation read once a second fails
          for i = 1, 3 do assert.is_true(ps.same(pack(ps.value(i)), pack(f(i)))) end
          assert.is_true(ps.same(pack(ps.value(4)), pack(f(4)))) -- a miss, then a hit in memory
          support.sleep(0.05)
        end
        assert.equal(4, runs)
        assert.is_true(cr.stats(f).store_errors >= 2)
        own_server:start()
        support.sleep(1.1) -- the store tries again at most once a second
        f(5)
      end)
      assert.equal(1, #warnings, table.concat(warnings, "\n"))
      assert.matches("cache_data: the store redis://127.0.0.1:" .. own_server.port .. "/0 failed (", warnings[1], 1,
        true)
      -- shared again: another process finds what this one stored after the restart
      local out, status = support.lua_child(([[
        local cr = require "cache_resource"
        local ps = require "persist_support"
        local store = require("cache_resource.redis").connect{ port = %d, prefix = %q }
        local f = cr.data(function(i) return ps.value(i) end, { persist = store, name = "replicated" })
        local exact = ps.same(table.pack(ps.value(5)), table.pack(f(5)))
        ps.emit({ exact = exact, store_hits = cr.stats(f).store_hits })
      ]]):format(own_server.port, prefix))
      own_server:stop()
      assert.equal(0, status, out)
      assert.same({ exact = true, store_hits = 1 }, ps.results(out))
    end)

  it("that stalls (DEBUG SLEEP) does not delay another coroutine's timer: a miss yields to the event loop",
    function()
      local store = redis.connect { port = server.port, prefix = fresh_prefix(), timeout = 2 }
      local f = cache_data(function(i) return i * 10 end, { persist = store })
      local cq = cqueues.new()
      cq:wrap(function() assert(f(0) == 0) end) -- connected, generation read
      assert(cq:loop())
      local stalled_for, ticks, late = nil, 0, 0
      local stall = server:send("DEBUG", "SLEEP", "0.5")
      cq:wrap(function()
        local t0 = cqueues.monotime()
        assert(f(1) == 10)
        stalled_for = cqueues.monotime() - t0
      end)
      cq:wrap(function()
        while stalled_for == nil do
          local t0 = cqueues.monotime()
          cqueues.sleep(0.01)
          late = math.max(late, cqueues.monotime() - t0 - 0.01)
          ticks = ticks + 1
        end
      end)
      assert(cq:loop())
      stall:close()
      -- the stall may start late on a busy machine: at least half of it
      assert.is_true(stalled_for >= 0.25, ("the miss did not wait for the stalled server (%.3f s)"):format(stalled_for))
      assert.is_true(ticks >= 20, "the timer ticked " .. ticks .. " times during the stall")
      assert.is_true(late <= 0.02 * rs.SLOWDOWN, ("a tick was %.1f ms late"):format(late * 1000))
      assert.equal(2, cr.stats(f).store_writes) -- f(0), then f(1) once the server answered
    end)

  it("with a wrong password: one clear warn(), memory only", function()
    local locked = rs.start { password = "right" }
    local store = redis.connect { port = locked.port, password = "wrong", prefix = fresh_prefix() }
    local f = cache_data(function(i) return i end, { persist = store })
    local warnings = support.capture_warnings(function()
      for i = 1, 5 do assert.equal(i, f(i)) end
      for i = 1, 5 do assert.equal(i, f(i)) end
    end)
    locked:stop()
    assert.equal(1, #warnings, table.concat(warnings, "\n"))
    assert.matches("AUTH", warnings[1], 1, true)
    local s = cr.stats(f)
    assert.same({ 5, 5, 0 }, { s.misses, s.hits, s.store_writes })
  end)
end)
