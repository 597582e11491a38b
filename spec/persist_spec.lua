-- cache_data with persist, in one process: what a function asks of its
-- store and when, what it does with what comes back (a found entry, a
-- damaged one, one of another key), how clears reach the store and how a
-- clear elsewhere reaches memory, and a store that fails in every way a
-- store can. (Several processes and restarts: persist_processes_spec.lua.)
local cr = require "cache_resource"
local support = require "support"
local ps = require "persist_support"
local cache_data = cr.data

local HEX32 = "^" .. ("%x"):rep(32) .. "$"

local function pack(...) return table.pack(...) end

-- Rows shown by a replayable named "spec.row".
local shown = {}
local row = cr.replayable(function(s) shown[#shown + 1] = s end, "spec.row")

describe("cache_data with persist", function()
  local clock
  before_each(function()
    support.reset()
    clock = support.fake_clock(1000)
    shown = {}
  end)
  after_each(function()
    support.reset()
    ps.retire_stores()
  end)

  -- Memory forgets every entry, the store keeps its own: a restart.
  local function restart(store)
    store.keep = true
    cache_data.clear()
    store.keep = false
  end

  -- Every wrap is a function of its own (a name no other spec uses): its
  -- counters start at zero.
  local wraps = 0
  local function wrap(store, opts, body)
    opts = opts or {}
    opts.persist = store
    wraps = wraps + 1
    opts.name = (opts.name or "f") .. "-" .. wraps
    local runs = 0
    local f = cache_data(function(i)
      runs = runs + 1
      if body then return body(i) end
      row("row " .. i)
      return ps.value(i)
    end, opts)
    return f, function() return runs end
  end

  describe("on a miss", function()
    it("reads the store before running fn, then writes the entry: ns and key are 32 hex digits", function()
      local store = ps.table_store()
      local f, runs = wrap(store, { ttl = 60, max_stale = 30 })
      assert.is_true(ps.same(pack(ps.value(1)), pack(f(1))))
      assert.equal(1, runs())
      local gets, sets = store.of("get"), store.of("set")
      assert.equal(1, #gets)
      assert.equal(1, #sets)
      assert.matches(HEX32, sets[1][2])
      assert.matches(HEX32, sets[1][3])
      assert.equal(gets[1][2], sets[1][2])
      assert.equal(gets[1][3], sets[1][3])
      assert.equal(90, sets[1][5]) -- ttl + max_stale: the store keeps it as long as memory may
      local s = cr.stats(f)
      assert.same({ 1, 0, 1, 0, 0 }, { s.misses, s.store_hits, s.store_writes, s.store_errors, s.persist_skipped })
      assert.equal("a Lua table", s.persist)
    end)

    it("passes max_entries and max_size to the store as limits, and no ttl without one", function()
      local store = ps.table_store()
      local f = wrap(store, { max_entries = 10, max_size = "1MB" })
      f(1)
      local set = store.of("set")[1]
      assert.is_nil(set[5])
      assert.same({ max_entries = 10, max_size = 1024 * 1024 }, set[6])
    end)

    it("gives arguments that differ different keys, and equal arguments the same key in every wrap", function()
      local store = ps.table_store()
      local f = wrap(store)
      f(1); f(2)
      local a, b = store.of("set")[1][3], store.of("set")[2][3]
      assert.are_not.equal(a, b)
      restart(store)
      store.calls = {}
      f(1)
      assert.equal(a, store.of("get")[1][3])
    end)

    it("keys a long argument by all its bytes, not by the digest memory keeps", function()
      local store = ps.table_store()
      local f = wrap(store, nil, function(s) return #s end)
      local long = ("x"):rep(1000)
      assert.equal(1000, f(long))
      local key = store.of("set")[1][3]
      restart(store)
      assert.equal(1000, f(long))
      assert.equal(key, store.of("get")[2][3])
      assert.equal(1, cr.stats(f).store_hits)
    end)

    it("never writes a failure result", function()
      local store = ps.table_store()
      local f = wrap(store, { failure_ttl = 10 }, function() return nil, "no rows" end)
      local v, err = f(1)
      assert.is_nil(v)
      assert.equal("no rows", err)
      assert.equal(0, #store.of("set"))
      assert.equal(0, cr.stats(f).store_writes)
    end)

    it("refuses a result whose metatable is not registered, naming the fix", function()
      local store = ps.table_store()
      local f = wrap(store, { name = "load_points" }, function() return setmetatable({}, {}) end)
      local err = support.error_of(f, 1)
      assert.matches("cache_data: cannot copy the result of load_points%-%d+: result%[1%]", err)
      assert.matches("cache_data.register_metatable(name, mt)", err, 1, true)
      assert.equal(0, #store.of("set"))
      assert.equal(1, cr.stats(f).failures)
    end)

    it("keeps an entry in memory only when a recorded call cannot leave the process", function()
      local store = ps.table_store()
      local unnamed = cr.replayable(function() end)
      local f = wrap(store, nil, function(i)
        unnamed(i)
        return i
      end)
      local g = wrap(store, nil, function(i)
        row(print) -- a function argument: kept by reference, not copied
        return i
      end)
      assert.equal(1, f(1))
      assert.equal(2, g(2))
      assert.equal(0, #store.of("set"))
      assert.equal(1, cr.stats(f).persist_skipped)
      assert.equal(1, cr.stats(g).persist_skipped)
      assert.equal(1, f(1)) -- a hit in memory all the same
      assert.equal(1, cr.stats(f).hits)
    end)
  end)

  describe("an entry found in the store", function()
    it("is counted in store_hits, returned as a fresh exact copy, its calls replayed, and kept in memory", function()
      local store = ps.table_store()
      local f, runs = wrap(store, { ttl = 100 })
      f(1)
      restart(store)
      shown = {}
      local got = pack(f(1))
      assert.is_true(ps.same(pack(ps.value(1)), got))
      assert.same({ "row 1" }, shown)
      assert.equal(1, runs())
      local s = cr.stats(f)
      assert.same({ 1, 1, 1 }, { s.store_hits, s.misses, s.store_writes }) -- the first call wrote it
      local again = pack(f(1)) -- from memory now
      assert.is_true(ps.same(got, again))
      assert.are_not.equal(got[1], again[1])
      assert.same({ "row 1", "row 1" }, shown)
      assert.equal(1, cr.stats(f).hits)
    end)

    it("lives in memory for what is left of its ttl, in wall-clock time", function()
      local store = ps.table_store()
      local f, runs = wrap(store, { ttl = 100 })
      f(1) -- stored at 1000, stale at 1100
      restart(store)
      clock.now = 1080
      f(1) -- found with 20 s left
      assert.equal(1, runs())
      clock.now = 1099
      f(1)
      assert.equal(1, runs())
      clock.now = 1100.5
      f(1) -- gone from memory; the store's entry is past its ttl too
      assert.equal(2, runs())
    end)

  end)

  describe("bytes a store returns", function()
    local function stored_then(fix)
      local store = ps.table_store()
      local f, runs = wrap(store, { name = "loader" })
      f(1)
      local set = store.of("set")[1]
      restart(store)
      store.entries[set[2] .. "/" .. set[3]] = fix(set[4])
      return f, runs, store
    end

    local damages = {
      ["cut short"] = function(b) return b:sub(1, #b // 2) end,
      ["extended"] = function(b) return b .. "x" end,
      ["with one bit flipped"] = function(b)
        local i = #b // 2
        return b:sub(1, i - 1) .. string.char(b:byte(i) ~ 1) .. b:sub(i + 1)
      end,
      ["empty"] = function() return "" end,
      ["foreign"] = function() return ("not an entry at all "):rep(10) end,
    }
    for what, damage in pairs(damages) do
      it(what .. " are a miss: counted, recomputed and replaced, one warn() per function", function()
        local warnings = support.capture_warnings(function()
          local f, runs, store = stored_then(damage)
          assert.is_true(ps.same(pack(ps.value(1)), pack(f(1))))
          assert.equal(2, runs())
          assert.equal(1, cr.stats(f).store_errors)
          local sets = store.of("set")
          assert.equal(2, #sets) -- replaced by the recompute
          assert.is_true(store.entries[sets[2][2] .. "/" .. sets[2][3]] == sets[2][4])
          restart(store)
          store.entries[sets[2][2] .. "/" .. sets[2][3]] = damage(sets[2][4])
          f(1)
          assert.equal(2, cr.stats(f).store_errors)
        end)
        assert.equal(1, #warnings)
        assert.matches("^cache_data: an entry of loader%-%d+ in the store a Lua table could not be used", warnings[1])
      end)
    end

    it("changed anywhere inside, the checksum made to match: decoded or a counted miss, never a crash", function()
      local store = ps.table_store()
      local f, runs = wrap(store)
      f(1)
      local set = store.of("set")[1]
      local good, where = set[4]:sub(1, -9), set[2] .. "/" .. set[3]
      local reseal = cache_data._persist.reseal
      local want = pack(ps.value(1))
      math.randomseed(20)
      support.capture_warnings(function()
        for _ = 1, 3000 do
          local i, byte, b = math.random(#good), string.char(math.random(0, 255)), good
          local how = math.random(4)
          if how == 1 then b = b:sub(1, i - 1) .. byte .. b:sub(i + 1)     -- a byte changed
          elseif how == 2 then b = b:sub(1, i - 1) .. b:sub(i + 1)         -- one left out
          elseif how == 3 then b = b:sub(1, i) .. byte .. b:sub(i + 1)     -- one put in
          else b = b:sub(1, i) end                                         -- cut short
          restart(store)
          store.entries[where] = reseal(b .. "checksum")
          local s0 = cr.stats(f)
          local got = pack(f(1))
          local s1 = cr.stats(f)
          -- refused (damaged, or now past its ttl, or naming no replayable here): computed again,
          -- exactly; else the bytes still held an entry (the checksum was made for them): its values
          if s1.store_hits == s0.store_hits then assert.is_true(ps.same(want, got)) end
        end
      end)
      local s = cr.stats(f)
      assert.equal(3001, s.misses + s.store_hits)
      assert.equal(s.misses, runs())
      assert.is_true(s.store_errors > 1000)
      assert.is_true(s.store_hits > 0)
    end)

    it("of another version of the format are a miss", function()
      local f, runs = stored_then(function(b) return b:sub(1, 4) .. "\2" .. b:sub(6) end)
      support.capture_warnings(function() f(1) end)
      assert.equal(2, runs())
      assert.equal(1, cr.stats(f).store_errors)
    end)

    it("of other arguments under this key (a digest collision) are a miss", function()
      local store = ps.table_store()
      local f, runs = wrap(store, { name = "loader" })
      f(1)
      f(2)
      local one, two = store.of("set")[1], store.of("set")[2]
      restart(store)
      store.entries[two[2] .. "/" .. two[3]] = one[4] -- key 2 holds the entry of key 1
      local warnings = support.capture_warnings(function()
        assert.is_true(ps.same(pack(ps.value(2)), pack(f(2))))
      end)
      assert.equal(3, runs())
      assert.equal(1, cr.stats(f).store_errors)
      assert.matches("other arguments", warnings[1], 1, true)
    end)

    it("of another function are a miss", function()
      local store = ps.table_store()
      local f = wrap(store, { name = "one" })
      local g, runs = wrap(store, { name = "two" })
      f(1)
      g(1)
      local a, b = store.of("set")[1], store.of("set")[2]
      restart(store)
      store.entries[b[2] .. "/" .. b[3]] = a[4]
      support.capture_warnings(function() g(1) end)
      assert.equal(2, runs())
      assert.equal(1, cr.stats(g).store_errors)
    end)
  end)

  describe("clearing", function()
    it("clear(f) clears f's ns in the store, clear(f, ...) deletes that key", function()
      local store = ps.table_store()
      local f = wrap(store)
      f(1)
      f(2)
      local ns, key2 = store.of("set")[2][2], store.of("set")[2][3]
      cr.clear(f, 2)
      assert.same({ "delete", ns, key2, n = 3 }, store.of("delete")[1])
      assert.equal(1, cr.stats(f).entries)
      cr.clear(f)
      assert.same({ "clear", ns, n = 2 }, store.of("clear")[1])
      assert.equal(0, cr.stats(f).entries)
      assert.is_nil(next(store.entries))
    end)

    it("cache_data.clear() clears every persisted function's ns, and the default store whole", function()
      local store = ps.table_store()
      local f = wrap(store)
      local g = wrap(true)
      f(1)
      g(1)
      local dstore = assert(require("cache_resource.sqlite").open(cache_data.store_path()))
      local ns = store.of("set")[1][2]
      dstore:set(("%032x"):format(7), ("%032x"):format(7), "an entry of a function not wrapped here")
      cache_data.clear()
      assert.same({ "clear", ns, n = 2 }, store.of("clear")[1])
      assert.is_nil(dstore:get(("%032x"):format(7), ("%032x"):format(7)))
      assert.equal(0, cr.stats(f).entries + cr.stats(g).entries)
      dstore:close()
    end)

    it("elsewhere reaches memory within a second of the module clock: the generation is read once a second",
      function()
        local store = ps.table_store()
        local f, runs = wrap(store)
        f(1)
        local ns = store.of("set")[1][2]
        local reads = #store.of("generation")
        for _ = 1, 10 do f(1) end
        assert.equal(reads, #store.of("generation")) -- hits within the second: none
        store:clear(ns) -- another process's clear
        clock.now = 1000.5
        f(1)
        assert.equal(1, runs()) -- the copy may live up to a second
        clock.now = 1001
        f(1)
        assert.equal(2, runs())
        assert.equal(reads + 1, #store.of("generation"))
      end)

    it("of this process is not taken for a clear elsewhere: what was stored after it stays", function()
      local store = ps.table_store()
      local f, runs = wrap(store)
      f(1)
      cr.clear(f)
      f(1)
      clock.now = 1002
      f(1)
      assert.equal(2, runs())
    end)
  end)

  describe("a store that fails", function()
    local function failing_store(how)
      local store = { calls = 0 }
      for _, m in ipairs({ "get", "set", "delete", "clear", "generation" }) do
        store[m] = function()
          store.calls = store.calls + 1
          return how(m)
        end
      end
      return setmetatable(store, { __tostring = function() return "the failing store" end })
    end

    local hows = {
      ["raises"] = function() error("boom") end,
      ["returns nil and a message"] = function() return nil, "disk on fire" end,
      ["returns garbage"] = function(m)
        if m == "get" then return 42 elseif m == "generation" then return "seven" end
        return false
      end,
      ["yields outside a coroutine"] = function() return coroutine.yield("x") end,
      ["raises an error that is not a string"] = function() error({ code = 5 }) end,
    }
    for what, how in pairs(hows) do
      it("that " .. what .. ": the function works from memory, the errors are counted, one warn()", function()
        local store = failing_store(how)
        local f, runs
        local warnings = support.capture_warnings(function()
          f, runs = wrap(store, { name = "robust" })
          for _ = 1, 3 do
            assert.is_true(ps.same(pack(ps.value(1)), pack(f(1))))
            clock.now = clock.now + 2 -- the generation read again on every call
          end
          cr.clear(f, 1)
          cr.clear(f)
          cache_data.clear()
          f(2)
        end)
        assert.equal(2, runs())
        assert.is_true(cr.stats(f).store_errors >= 4)
        assert.equal(1, #warnings, table.concat(warnings, "\n"))
        assert.matches("cache_data: the store the failing store failed (", warnings[1], 1, true)
        assert.matches("for robust%-%d+", warnings[1])
      end)
    end

    it("warns again after it worked in between: a new episode", function()
      local down = true
      local inner = ps.table_store()
      local store = setmetatable({}, { __index = function(_, m)
        return function(_, ...)
          if down then return nil, "down" end
          return inner[m](inner, ...)
        end
      end })
      local warnings = support.capture_warnings(function()
        local f = wrap(store)
        f(1)
        down = false
        f(2)
        down = true
        f(3)
      end)
      assert.equal(2, #warnings)
    end)

    it("that is only full (writes fail, reads work) warns once", function()
      local inner = ps.table_store()
      local store = setmetatable({ set = function() return nil, "disk full" end }, { __index = function(_, m)
        return function(_, ...) return inner[m](inner, ...) end
      end })
      local warnings = support.capture_warnings(function()
        local f = wrap(store)
        for i = 1, 5 do f(i) end
      end)
      assert.equal(1, #warnings)
      assert.matches("(set for ", warnings[1], 1, true)
    end)

    it("without one of the five methods is refused at wrap time, naming it", function()
      local store = ps.table_store()
      store.generation = nil
      local err = support.error_of(cache_data, print, { persist = setmetatable({
        get = store.get, set = store.set, delete = store.delete, clear = store.clear,
      }, {}) })
      assert.matches("cache_data: option 'persist': the store has no method 'generation'", err, 1, true)
    end)
  end)

  describe("re-entered", function()
    it("by a store that calls back into the module, and by finalizers at every allocation: values stay exact",
      function()
        local inner = ps.table_store()
        local f, g
        local depth = 0
        local actions = {
          function() cr.clear(f) end,
          function() cr.clear(f, 2) end,
          function() cache_data.clear() end,
          function() f(7) end,
          function() g(1) end,
          function() collectgarbage() end,
          function() clock.now = clock.now + 0.7 end,
          function() error("the store's own error") end,
        }
        local calls = 0
        local store = setmetatable({}, { __index = function(_, m)
          return function(_, ...)
            calls = calls + 1
            if depth == 0 then
              depth = depth + 1
              local ok, err = pcall(actions[calls % #actions + 1])
              depth = depth - 1
              if not ok and tostring(err):find("the store's own error", 1, true) then error(err, 0) end
            end
            return inner[m](inner, ...)
          end
        end })
        f = wrap(store, { ttl = 5 })
        g = wrap(store)
        local function finalizers(n)
          for i = 1, n do
            setmetatable({}, { __gc = function()
              if depth == 0 then
                depth = depth + 1
                pcall(f, i % 3 + 1)
                depth = depth - 1
              end
            end })
          end
        end
        support.gc_pace(1, 100, 1)
        local ok, err = pcall(function()
          support.capture_warnings(function()
            for round = 1, 200 do
              finalizers(3)
              local i = round % 4 + 1
              assert.is_true(ps.same(pack(ps.value(i)), pack(f(i))))
              if round % 17 == 0 then restart(inner) end
            end
          end)
        end)
        support.gc_pace(200, 100, 13)
        collectgarbage()
        assert(ok, err)
        assert.is_true(calls > 100)
      end)
  end)

  describe("the default store (persist = true)", function()
    it("is the SQLite store at store_path(), shown in stats", function()
      local f = wrap(true)
      f(1)
      local path = cache_data.store_path()
      assert.equal(path, cr.stats(f).persist)
      assert.equal(require("cache_resource.sqlite").default_path(), path)
      local s = cr.stats(f)
      assert.same({ 1, 1 }, { s.misses, s.store_writes })
    end)

    it("and an explicit store keep the identity: persist is not part of it", function()
      local body = function(i) return i end
      local a = cache_data(body, { ttl = 5 })
      local b = cache_data(body, { ttl = 5, persist = ps.table_store() })
      a(1)
      b(1)
      assert.equal(1, cr.stats(b).hits)
    end)
  end)
end)
