-- What every cache_data store does, the same for each: the SQLite store,
-- the Redis store, a user's own table. A spec runs these cases on a store:
--
--   local conformance = require "store_conformance"
--   conformance("the SQLite store", function() return a_fresh_empty_store() end, {
--     limits = true,      -- it evicts least recently used entries past set's limits
--     processes = true,   -- another process reaches the same store ...
--     child = function(store) return "return <Lua that makes the same store>" end,
--     failing = function() return store_whose_writes_fail, cleanup end,  -- optional
--     description = function(store) return "what tostring(store) is" end,  -- optional
--   })
--
-- ns and key are 32 lowercase hex digits, as the core makes them.
local busted = require "busted"
local assert = require "luassert"
local support = require "support"
local describe, it, after_each = busted.describe, busted.it, busted.after_each

local function id(n) return ("%032x"):format(n) end

-- Every byte value, several times over: n bytes.
local function all_bytes(n)
  local t = {}
  for i = 1, 256 do t[i] = string.char(i - 1) end
  local unit = table.concat(t)
  return unit:rep(n // 256 + 1):sub(1, n)
end

return function(name, factory, caps)
  caps = caps or {}
  describe(name .. " (store conformance)", function()
    local opened = {}
    local function fresh()
      local store = factory()
      opened[#opened + 1] = store
      return store
    end
    after_each(function()
      for i, store in ipairs(opened) do
        if type(store.close) == "function" then store:close() end
        opened[i] = nil
      end
    end)

    local A, B = id(0xa), id(0xb)

    -- Keys 1..3 in A and in B, each value naming its ns and key.
    local function fill_both(s)
      for _, ns in ipairs({ A, B }) do
        for k = 1, 3 do assert.is_true(s:set(ns, id(k), ns .. k)) end
      end
    end

    it("get of a missing key is nil", function()
      local s = fresh()
      assert.is_nil((s:get(A, id(1))))
      assert.is_true(s:set(A, id(1), "x"))
      assert.is_nil((s:get(A, id(2))))
      assert.is_nil((s:get(B, id(1))))
    end)

    it("set then get returns the exact bytes: empty, with NULs, every byte value, 1 MB", function()
      local s = fresh()
      local values = { "", "\0", "a\0b\0\0", all_bytes(256), all_bytes(1024 * 1024) }
      for i, v in ipairs(values) do assert.is_true(s:set(A, id(i), v)) end
      for i, v in ipairs(values) do
        local got = s:get(A, id(i))
        assert.equal(#v, #got)
        assert.is_true(got == v, "value " .. i .. " differs")
      end
    end)

    it("set replaces the entry", function()
      local s = fresh()
      assert.is_true(s:set(A, id(1), "old"))
      assert.is_true(s:set(A, id(1), "new, and longer than the old one"))
      assert.equal("new, and longer than the old one", s:get(A, id(1)))
      assert.is_true(s:set(A, id(1), ""))
      assert.equal("", s:get(A, id(1)))
    end)

    it("delete removes only that key", function()
      local s = fresh()
      fill_both(s)
      assert.is_true(s:delete(A, id(2)))
      assert.is_nil((s:get(A, id(2))))
      assert.equal(A .. 1, s:get(A, id(1)))
      assert.equal(A .. 3, s:get(A, id(3)))
      assert.equal(B .. 2, s:get(B, id(2)))
      assert.is_true(s:delete(A, id(2))) -- nothing left to delete is no error
    end)

    it("clear(ns) removes that ns only and changes its generation, not another's", function()
      local s = fresh()
      fill_both(s)
      local ga, gb = s:generation(A), s:generation(B)
      assert.is_true(s:clear(A))
      for k = 1, 3 do
        assert.is_nil((s:get(A, id(k))))
        assert.equal(B .. k, s:get(B, id(k)))
      end
      assert.not_equal(ga, s:generation(A))
      assert.equal(gb, s:generation(B))
      local again = s:generation(A)
      assert.is_true(s:clear(A))
      assert.not_equal(again, s:generation(A))
    end)

    it("clear(nil) removes everything and changes every generation", function()
      local s = fresh()
      for _, ns in ipairs({ A, B }) do assert.is_true(s:set(ns, id(1), "v")) end
      local ga, gb, gc = s:generation(A), s:generation(B), s:generation(id(0xc))
      assert.is_true(s:clear(nil))
      assert.is_nil((s:get(A, id(1))))
      assert.is_nil((s:get(B, id(1))))
      assert.not_equal(ga, s:generation(A))
      assert.not_equal(gb, s:generation(B))
      assert.not_equal(gc, s:generation(id(0xc)))
    end)

    it("generation is an integer that stays the same without clears", function()
      local s = fresh()
      local g = s:generation(A)
      assert.equal("integer", math.type(g))
      assert.is_true(s:set(A, id(1), "v"))
      assert.is_true(s:set(A, id(1), "w", 60))
      assert.equal("w", s:get(A, id(1)))
      assert.is_true(s:delete(A, id(1)))
      assert.is_true(s:clear(B))
      assert.equal(g, s:generation(A))
    end)

    it("an entry with ttl 1 is gone once it passed, not before; others stay", function()
      local s = fresh()
      local t0 = support.now()
      assert.is_true(s:set(A, id(1), "short", 1))
      assert.is_true(s:set(A, id(2), "long", 3600))
      assert.is_true(s:set(A, id(3), "forever"))
      assert.equal("short", s:get(A, id(1)))
      local gone_after
      while support.now() - t0 < 2.5 do
        if s:get(A, id(1)) == nil then gone_after = support.now() - t0; break end
        support.sleep(0.05)
      end
      assert.is_number(gone_after, "the entry outlived its ttl by more than 1.5 s")
      assert.is_true(gone_after >= 0.9, ("gone after %.2f s"):format(gone_after))
      assert.equal("long", s:get(A, id(2)))
      assert.equal("forever", s:get(A, id(3)))
    end)

    it("tostring describes the store", function()
      local s = fresh()
      local text = tostring(s)
      assert.truthy(#text > 0)
      assert.falsy(text:match("^table: ") or text:match("^userdata: "), text)
      if caps.description then assert.equal(caps.description(s), text) end
    end)

    if caps.limits then
      it("limits: past max_entries, the least recently used entry goes", function()
        local s = fresh()
        local limits = { max_entries = 3 }
        for k = 1, 3 do assert.is_true(s:set(A, id(k), "v" .. k, nil, limits)) end
        assert.equal("v1", s:get(A, id(1)))      -- 1 is now the most recently used
        assert.is_true(s:set(A, id(4), "v4", nil, limits))
        assert.is_nil((s:get(A, id(2))))
        for _, k in ipairs({ 1, 3, 4 }) do assert.equal("v" .. k, s:get(A, id(k))) end
        assert.is_true(s:set(B, id(1), "b", nil, limits)) -- another ns has bounds of its own
        for _, k in ipairs({ 1, 3, 4 }) do assert.equal("v" .. k, s:get(A, id(k))) end
      end)

      it("limits: past max_size (bytes), least recently used entries go until it fits", function()
        local s = fresh()
        local limits = { max_size = 250 }
        local v = ("x"):rep(100)
        assert.is_true(s:set(A, id(1), v, nil, limits))
        assert.is_true(s:set(A, id(2), v, nil, limits))
        assert.equal(v, s:get(A, id(1)))
        assert.is_true(s:set(A, id(3), v, nil, limits))
        assert.is_nil((s:get(A, id(2))))
        assert.equal(v, s:get(A, id(1)))
        assert.equal(v, s:get(A, id(3)))
        assert.is_true(s:set(A, id(4), ("y"):rep(240), nil, limits)) -- room for it alone
        assert.is_nil((s:get(A, id(1))))
        assert.is_nil((s:get(A, id(3))))
        assert.equal(240, #s:get(A, id(4)))
      end)

      it("limits: an entry larger than max_size alone is not kept, and evicts nothing", function()
        local s = fresh()
        local limits = { max_size = 100 }
        assert.is_true(s:set(A, id(1), "small", nil, limits))
        assert.is_true(s:set(A, id(2), ("z"):rep(101), nil, limits))
        assert.is_nil((s:get(A, id(2))))
        assert.equal("small", s:get(A, id(1)))
      end)
    end

    if caps.processes then
      it("a value set by one process is seen by another, and the other way round", function()
        local s = fresh()
        local v = all_bytes(3000)
        assert.is_true(s:set(A, id(1), v))
        local out, status = support.lua_child(([[
          local store = assert((function() %s end)())
          local t = {}
          for i = 1, 256 do t[i] = string.char(i - 1) end
          local v = store:get(%q, %q)
          io.write(v == table.concat(t):rep(12):sub(1, 3000) and "exact" or "differs")
          assert(store:set(%q, %q, "from the child"))
          io.write(" generation ", store:generation(%q))
        ]]):format(caps.child(s), A, id(1), B, id(2), A))
        assert.equal(0, status, out)
        assert.matches("^exact generation %-?%d+$", out)
        assert.equal("from the child", s:get(B, id(2)))
        assert.equal(tostring(s:generation(A)), out:match("generation (%-?%d+)$"))
        local again, again_status = support.lua_child(([[
          local store = assert((function() %s end)())
          assert(store:clear(%q))
        ]]):format(caps.child(s), A))
        assert.equal(0, again_status, again)
        assert.is_nil((s:get(A, id(1))))
        assert.equal("from the child", s:get(B, id(2)))
      end)
    end

    if caps.failing then
      it("run-time failures return nil and a message; no method raises", function()
        local s, cleanup = caps.failing()
        local calls = {
          { "get", A, id(1) }, { "set", A, id(1), "v", 10 }, { "delete", A, id(1) },
          { "clear", A }, { "clear", nil }, { "generation", A },
        }
        local ok, failures = pcall(function()
          local n = 0
          for _, c in ipairs(calls) do
            local results = table.pack(pcall(s[c[1]], s, table.unpack(c, 2, 5)))
            assert.is_true(results[1], c[1] .. " raised " .. tostring(results[2]))
            if results[2] == nil and results.n >= 3 then
              assert.is_string(results[3], c[1])
              assert.truthy(#results[3] > 0, c[1])
              n = n + 1
            end
            if c[1] == "set" then
              assert.is_nil(results[2], "set did not fail")
              assert.is_string(results[3])
            end
          end
          return n
        end)
        if cleanup then cleanup() end
        assert(ok, failures)
        assert.is_true(failures >= 1)
      end)
    end
  end)
end
