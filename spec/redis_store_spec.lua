-- The Redis store, require("cache_resource.redis").connect{...}, against real
-- redis-server processes on loopback: the cases every store passes, what
-- Redis adds (one string per entry, clears every process sees at once, key
-- prefixes, databases), processes sharing one server, and the failures a
-- user meets: a server killed and restarted, stalled, too slow, or
-- refusing the password. Needs redis-server (`.ci/run` installs it).
local rs = require "redis_support"

if not rs.available then
  pending("the Redis store [skipped: " .. rs.MISSING .. "]")
  return
end

local redis = require "cache_resource.redis"
local cqueues = require "cqueues"
local support = require "support"

local monotime = cqueues.monotime
local LUA = os.getenv("CR_LUA") or ("lua" .. _VERSION:match("%d+%.%d+"))
local BUILD = os.getenv("CR_BUILD") or "build"

local function hex(n) return ("%032x"):format(n) end
local NS, OTHER, KEY, KEY2 = hex(0xa1), hex(0xb2), hex(1), hex(2)

-- Bytes where every offset differs from its neighbours: all 256 byte
-- values, NULs included, in a period that is not a power of two.
local function pattern(n)
  local unit = {}
  for i = 0, 256 do unit[#unit + 1] = string.char(i % 256) end
  local s = table.concat(unit)
  return s:rep(n // #s + 1):sub(1, n)
end

local fresh_prefix = rs.fresh_prefix

-- The cases every store passes, the same for the SQLite store and a plain-Lua
-- one (spec/store_conformance.lua).
local store_cases = require "store_conformance"

describe("the Redis store", function()
  local server, own

  setup(function() server, own = rs.shared() end)
  teardown(function() if own then server:stop() end end)

  local function connect(opts)
    opts = opts or {}
    opts.port = opts.port or server.port
    if opts.prefix == nil then opts.prefix = fresh_prefix() end
    return redis.connect(opts)
  end

  -- (The same caps as spec/store_conformance.lua takes.)
  store_cases("the Redis store", function() return connect() end, {
    description = function() return ("redis://127.0.0.1:%d/0"):format(server.port) end,
    failing = function() return redis.connect { port = rs.free_port(), timeout = 0.2 } end,
    processes = true,
    child = function(store)
      return ("return require('cache_resource.redis').connect{ port = %d, prefix = %q }"):format(server.port,
        store.prefix)
    end,
  })

  describe("keeps", function()
    it("each entry as one Redis string under the prefix, with an expiry only when there is a ttl", function()
      local store = connect()
      store:set(NS, KEY, "with ttl", 5)
      store:set(NS, KEY2, "without")
      local entry = store.prefix .. "e:" .. NS .. ":"
      assert.equal("string", server:command("TYPE", entry .. KEY))
      local ms = server:command("PTTL", entry .. KEY)
      assert.is_true(ms > 4000 and ms <= 5000, "PTTL " .. ms)
      assert.equal(-1, server:command("PTTL", entry .. KEY2))
    end)

    it("its layout version in a key under the prefix", function()
      local store = connect()
      store:get(NS, KEY)
      assert.equal(redis.FORMAT, server:command("GET", store.prefix .. "format"))
    end)

    it("apps with different prefixes apart on one server", function()
      local a, b = connect(), connect()
      a:set(NS, KEY, "a's")
      assert.is_nil(b:get(NS, KEY))
      b:set(NS, KEY, "b's")
      assert.is_true(b:clear(nil))
      assert.equal("a's", a:get(NS, KEY))
      assert.is_nil(b:get(NS, KEY))
    end)

    it("databases apart: db selects one", function()
      local prefix = fresh_prefix()
      local zero, one = connect { prefix = prefix }, connect { prefix = prefix, db = 1 }
      assert.equal("redis://127.0.0.1:" .. server.port .. "/1", tostring(one))
      zero:set(NS, KEY, "in 0")
      assert.is_nil(one:get(NS, KEY))
      one:set(NS, KEY, "in 1")
      assert.equal("in 0", zero:get(NS, KEY))
      assert.equal("in 1", one:get(NS, KEY))
    end)
  end)

  describe("clears", function()
    it("remove the entries from Redis, not only from view", function()
      local store = connect()
      for i = 1, 600 do store:set(NS, hex(i), "v" .. i) end
      store:set(OTHER, KEY, "other")
      local entry = store.prefix .. "e:" .. NS .. ":"
      assert.equal(1, server:command("EXISTS", entry .. hex(600)))
      assert.is_true(store:clear(NS))
      for _, i in ipairs({ 1, 256, 257, 600 }) do assert.equal(0, server:command("EXISTS", entry .. hex(i))) end
      assert.equal(1, server:command("EXISTS", store.prefix .. "e:" .. OTHER .. ":" .. KEY))
      assert.is_true(store:clear(nil))
      assert.equal(0, server:command("EXISTS", store.prefix .. "e:" .. OTHER .. ":" .. KEY))
    end)

    it("reach every store on the server at once: no stale read after clear returns", function()
      local prefix = fresh_prefix()
      local writer, reader = connect { prefix = prefix }, connect { prefix = prefix }
      writer:set(NS, KEY, "old")
      assert.equal("old", reader:get(NS, KEY))
      local g = reader:generation(NS)
      assert.is_true(writer:clear(NS))
      assert.is_nil(reader:get(NS, KEY))
      assert.are_not.equal(g, reader:generation(NS))
      writer:set(NS, KEY, "new")
      g = reader:generation(NS)
      assert.is_true(reader:clear(nil))
      assert.is_nil(writer:get(NS, KEY))
      assert.are_not.equal(g, writer:generation(NS))
    end)

    it("hide an entry whose write raced them, so a stale value is never read after a clear", function()
      -- The writer read the counters before another store cleared: its write
      -- is retried with the counters of now, and nothing older is ever read.
      local prefix = fresh_prefix()
      local writer, clearer = connect { prefix = prefix }, connect { prefix = prefix }
      assert.is_nil(writer:get(NS, KEY)) -- the writer now knows the counters
      assert.is_true(clearer:clear(NS))
      assert.is_true(writer:set(NS, KEY, "computed"))
      assert.equal("computed", clearer:get(NS, KEY))
    end)
  end)

  describe("never returns", function()
    it("a value another program wrote under an entry's key", function()
      local store = connect()
      store:set(NS, KEY, "mine")
      server:command("SET", store.prefix .. "e:" .. NS .. ":" .. KEY, "garbage")
      assert.is_nil(store:get(NS, KEY))
      server:command("SET", store.prefix .. "e:" .. NS .. ":" .. KEY, ("CR1 %020d %020d\nmine"):format(0, 0))
      assert.equal("mine", store:get(NS, KEY)) -- (the layout, written by hand)
    end)

    it("entries written under an older layout version, which it takes over", function()
      local prefix = fresh_prefix()
      server:command("SET", prefix .. "format", "0")
      local store = connect { prefix = prefix }
      assert.is_nil(store:get(NS, KEY))
      assert.equal(redis.FORMAT, server:command("GET", prefix .. "format"))
    end)
  end)

  it("fails with a message naming the prefix when another program's key holds its layout version", function()
    for _, setup_key in ipairs({ { "SET", "format", "not a version" }, { "HSET", "format", "f", "v" } }) do
      local prefix = fresh_prefix()
      server:command(setup_key[1], prefix .. setup_key[2], setup_key[3], setup_key[4])
      local v, err, kind = connect { prefix = prefix }:get(NS, KEY)
      assert.is_nil(v)
      assert.equal("reply", kind)
      assert.matches("choose another prefix", err, 1, true)
    end
  end)

  it("refuses bad names and arguments with nil and a message", function()
    local store = connect()
    for _, call in ipairs({
      { "get", 42, KEY }, { "get", NS, "has:colon" }, { "get", "", KEY }, { "set", NS, KEY, {} },
      { "set", NS, KEY, "x", "soon" }, { "set", NS, KEY, "x", 0 / 0 }, { "delete", NS, nil },
      { "clear", "UPPER" }, { "generation", nil },
    }) do
      local v, err, kind = store[call[1]](store, table.unpack(call, 2, 5))
      assert.is_nil(v, call[1])
      assert.equal("argument", kind, call[1])
      assert.matches("^redis://[^:]+:%d+/0: bad ", err)
    end
  end)

  it("sends a command of the caller's on its connection (store:command)", function()
    local store = connect()
    assert.equal("PONG", store:command("PING"))
    assert.equal(1, store:command("SADD", store.prefix .. "mine", 42))
    assert.same({ "42" }, store:command("SMEMBERS", store.prefix .. "mine"))
    assert.matches("unknown command", store:command("NO-SUCH-COMMAND").err)
    local v, err, kind = store:command("GET", {})
    assert.is_nil(v)
    assert.equal("argument", kind)
    assert.matches("bad argument #2 to command", err, 1, true)
  end)

  it("raises for bad connect options, naming the option", function()
    assert.error_matches(function() redis.connect { prot = 6379 } end, "unknown option 'prot'")
    assert.error_matches(function() redis.connect { port = "6379" } end, "bad option 'port'")
    assert.error_matches(function() redis.connect { port = 70000 } end, "bad option 'port'")
    assert.error_matches(function() redis.connect { db = -1 } end, "bad option 'db'")
    assert.error_matches(function() redis.connect { timeout = 0 } end, "bad option 'timeout'")
    assert.error_matches(function() redis.connect { password = 1 } end, "bad option 'password'")
    assert.error_matches(function() redis.connect("localhost") end, "options table expected")
    assert.equal("redis://127.0.0.1:6379/0", tostring(redis.connect()))
    assert.equal("redis://[::1]:6380/2", tostring(redis.connect { host = "::1", port = 6380, db = 2 }))
  end)

  describe("inside cqueues coroutines", function()
    it("serves twenty coroutines sharing one store, each its own values", function()
      local store = connect()
      local cq = cqueues.new()
      local got = {}
      for i = 1, 20 do
        cq:wrap(function()
          assert(store:set(NS, hex(i), ("value %d"):format(i)))
          cqueues.sleep(0)
          got[i] = store:get(NS, hex(i))
        end)
      end
      local ok, err = cq:loop(10)
      assert.is_true(ok, err)
      for i = 1, 20 do assert.equal(("value %d"):format(i), got[i]) end
    end)

    describe("beside a stalled server", function()
      local private
      setup(function() private = rs.start() end)
      teardown(function() private:stop() end)

      it("answers busy at once to a call from outside cqueues while a coroutine's call is in flight", function()
        local store = redis.connect { port = private.port, timeout = 1 }
        assert(store:set(NS, KEY, "kept"))
        local stall = private:send("DEBUG", "SLEEP", "0.2")
        cqueues.sleep(0.05)
        local cq = cqueues.new()
        local got
        cq:wrap(function() got = store:get(NS, KEY) end)
        assert(cq:step(0)) -- that call now waits for the server
        local t0 = monotime()
        local v, err, kind = store:get(NS, KEY)
        assert.is_true(monotime() - t0 < 0.05 * rs.SLOWDOWN, "busy took " .. (monotime() - t0) .. " s")
        assert.is_nil(v)
        assert.equal("busy", kind)
        assert.matches("in use by another call", err, 1, true)
        assert(cq:loop(5))
        stall:close()
        assert.equal("kept", got)
      end)

      it("is held for at most one timeout by a call whose coroutine is never resumed", function()
        local store = redis.connect { port = private.port, timeout = 0.3 }
        assert(store:set(NS, KEY, "kept"))
        local abandoned = cqueues.new()
        local stall = private:send("DEBUG", "SLEEP", "0.2")
        cqueues.sleep(0.05)
        abandoned:wrap(function() store:get(NS, KEY) end)
        assert(abandoned:step(0)) -- the call now waits for the stalled server; its controller is never stepped again
        stall:close()
        local cq = cqueues.new()
        local early, late, err
        cq:wrap(function()
          early = { store:get(NS, KEY) } -- within the abandoned call's timeout: waits, then gives up
          cqueues.sleep(0.2)
          late, err = store:get(NS, KEY) -- past it: takes the connection over
        end)
        assert(cq:loop(5))
        assert.is_nil(early[1])
        assert.equal("busy", early[3])
        assert.equal("kept", late, err)
      end)
    end)
  end)

  describe("when its server fails", function()
    local private
    before_each(function() private = rs.start() end)
    after_each(function() private:stop() end)

    it("answers nil, message at once after a kill, tries to connect once a second, and recovers on restart",
      function()
      local store = redis.connect { port = private.port, timeout = 0.5 }
      assert.is_true(store:set(NS, KEY, "before"))
      private:kill()
      local t0 = monotime()
      local v, err = store:get(NS, KEY)
      assert.is_nil(v)
      assert.matches("^redis://127%.0%.0%.1:%d+/0: connection lost", err)
      assert.is_true(monotime() - t0 < 0.5 * rs.SLOWDOWN, "the failure took " .. (monotime() - t0) .. " s")
      local attempts, fast, slowest = 0, 0, 0
      t0 = monotime()
      while monotime() - t0 < 1.5 do
        local t = monotime()
        local r, e, kind = store:get(NS, KEY)
        slowest = math.max(slowest, monotime() - t)
        assert.is_nil(r)
        if kind == "down" then
          fast = fast + 1
          assert.matches("down, next attempt in", e, 1, true)
        else
          attempts = attempts + 1
          assert.equal("connect", kind)
        end
        cqueues.sleep(0.01)
      end
      assert.is_true(attempts >= 1 and attempts <= 2, attempts .. " connection attempts in 1.5 s")
      assert.is_true(fast > 50 / rs.SLOWDOWN, "only " .. fast .. " calls failed fast")
      assert.is_true(slowest < 0.25 * rs.SLOWDOWN, "a call took " .. slowest .. " s while the server was down")
      private:start()
      t0 = monotime()
      local ok
      repeat
        ok = store:set(NS, KEY, "after")
        if not ok then cqueues.sleep(0.02) end
      until ok or monotime() - t0 > 3
      assert.is_true(ok)
      assert.is_true(monotime() - t0 <= 1 + 0.2 * rs.SLOWDOWN, "recovered after " .. (monotime() - t0) .. " s")
      assert.equal("after", store:get(NS, KEY))
    end)

    it("gives up on a server slower than timeout, fails fast for a second, then works again", function()
      local store = redis.connect { port = private.port, timeout = 0.2 }
      assert.is_true(store:set(NS, KEY, "x"))
      local stall = private:send("DEBUG", "SLEEP", "0.6")
      cqueues.sleep(0.05)
      local t0 = monotime()
      local v, err, kind = store:get(NS, KEY)
      local took = monotime() - t0
      stall:close()
      assert.is_nil(v)
      assert.equal("timeout", kind)
      assert.matches("no answer within 0.2 s (timeout)", err, 1, true)
      assert.is_true(took >= 0.2 and took < 0.2 + 0.25 * rs.SLOWDOWN, "the call took " .. took .. " s")
      t0 = monotime()
      err, kind = select(2, store:get(NS, KEY))
      assert.equal("down", kind, err)
      assert.is_true(monotime() - t0 < 0.05 * rs.SLOWDOWN, "failing fast took " .. (monotime() - t0) .. " s")
      cqueues.sleep(1.1)
      assert.equal("x", store:get(NS, KEY))
    end)

    -- Runs wait() in one coroutine of a controller and a 10 ms timer in
    -- another until wait ends: how late each tick was (sorted), and the
    -- seconds wait took.
    local function timer_beside(wait)
      local cq = cqueues.new()
      local late, took, done = {}, nil, false
      cq:wrap(function()
        local t0 = monotime()
        wait()
        took = monotime() - t0
        done = true
      end)
      cq:wrap(function()
        while not done do
          local t0 = monotime()
          cqueues.sleep(0.01)
          late[#late + 1] = monotime() - t0 - 0.01
        end
      end)
      local ok, err = cq:loop(5)
      assert.is_true(ok, err)
      table.sort(late)
      return late, took
    end

    it("does not delay another coroutine's 10 ms timer while the server stalls (DEBUG SLEEP)", function()
      local store = redis.connect { port = private.port, timeout = 2 }
      assert.is_true(store:set(NS, KEY, "x"))
      -- the same timer beside a plain cqueues sleep: how late ticks are on
      -- this machine anyway
      local usual = timer_beside(function() cqueues.sleep(0.45) end)
      local got
      local late, took = timer_beside(function()
        local stall = private:send("DEBUG", "SLEEP", "0.5")
        cqueues.sleep(0.05) -- the server is asleep now
        got = store:get(NS, KEY)
        stall:close()
      end)
      assert.equal("x", got)
      assert.is_true(took > 0.35, "the store call and its wait took " .. took .. " s: the server did not stall it")
      -- A blocked loop would make one tick wait for the whole stall, and the
      -- typical tick as late as that. Here ticks are as late as beside a
      -- plain sleep: the median within a few ms of it, none near the stall.
      assert.is_true(#late >= 20, #late .. " ticks")
      local function ms(list) return list[(#list + 1) // 2] * 1000 end
      local figures = ("ticks were %.2f ms late (median; %.2f ms beside a plain sleep), %.1f ms at worst"):format(
        ms(late), ms(usual), late[#late] * 1000)
      assert.is_true(ms(late) < ms(usual) + 3 * rs.SLOWDOWN, figures)
      assert.is_true(late[#late] < 0.2, figures)
    end)
  end)

  describe("with a password", function()
    local private
    setup(function() private = rs.start { password = "right horse battery" } end)
    teardown(function() private:stop() end)

    it("works with the right one", function()
      local store = redis.connect { port = private.port, password = "right horse battery" }
      assert.is_true(store:set(NS, KEY, "secret"))
      assert.equal("secret", store:get(NS, KEY))
    end)

    it("answers nil and a message naming AUTH for a wrong one, or none", function()
      for _, password in ipairs({ "wrong", false }) do
        local store = redis.connect { port = private.port, password = password or nil }
        local v, err, kind = store:get(NS, KEY)
        assert.is_nil(v)
        assert.equal("auth", kind)
        assert.matches("AUTH", err, 1, true)
        assert.is_nil(store:set(NS, KEY, "x"))
      end
    end)
  end)

  describe("as replicas do", function()
    it("three processes share one server: one sets, two get the exact bytes, a clear reaches both at once",
      function()
      local prefix = fresh_prefix()
      local ok, dir = support.shell("mktemp -d /tmp/cr-replicas.XXXXXX")
      assert(ok, dir)
      dir = dir:gsub("\n$", "")
      finally(function() support.shell("rm -rf " .. support.shell_quote(dir)) end)
      local bytes = pattern(64 * 1024)
      -- a replica: waits for the entry, writes it out, then waits for "cleared"
      -- and reports what one get and one generation call see right after it
      local replica = ([[
        package.cpath = "./%s/?.so;" .. package.cpath
        package.path = "lua/?.lua;" .. package.path
        local cqueues = require "cqueues"
        local store = require("cache_resource.redis").connect { port = %d, prefix = %q }
        local ns, key, dir, me = %q, %q, %q, arg[1]
        local function exists(name) local f = io.open(dir .. "/" .. name); if f then f:close() end; return f end
        local got
        for _ = 1, 500 do got = store:get(ns, key); if got then break end; cqueues.sleep(0.01) end
        local g = assert(store:generation(ns))
        local f = assert(io.open(dir .. "/" .. me .. ".part", "wb")); f:write(got or ""); f:close()
        assert(os.rename(dir .. "/" .. me .. ".part", dir .. "/" .. me .. ".bin")) -- now ready for the clear
        for _ = 1, 500 do if exists("cleared") then break end; cqueues.sleep(0.01) end
        io.write(tostring(store:get(ns, key)), " ", tostring(store:generation(ns) ~= g))
      ]]):format(BUILD, server.port, prefix, NS, KEY, dir)
      local f = assert(io.open(dir .. "/replica.lua", "w"))
      f:write(replica)
      f:close()
      local children = {}
      for i = 1, 2 do
        children[i] = io.popen(LUA .. " " .. support.shell_quote(dir .. "/replica.lua") .. " replica" .. i)
      end
      local store = connect { prefix = prefix }
      assert.is_true(store:set(NS, KEY, bytes))
      for i = 1, 2 do
        local path = dir .. "/replica" .. i .. ".bin"
        local t0 = monotime()
        while not io.open(path) and monotime() - t0 < 10 do cqueues.sleep(0.01) end
      end
      assert.is_true(store:clear(NS))
      f = assert(io.open(dir .. "/cleared", "w"))
      f:close()
      for i = 1, 2 do
        local out = children[i]:read("a")
        assert.is_true(children[i]:close())
        assert.is_true(support.read_file(dir .. "/replica" .. i .. ".bin") == bytes, "replica " .. i .. "'s bytes")
        assert.equal("nil true", out, "replica " .. i .. " after the clear")
      end
    end)
  end)
end)
