-- The store conformance cases (spec/store_conformance.lua) on every store
-- there is: the SQLite store, and a store written in plain Lua, the way a
-- user writes their own. A new store is a factory and a capability table.
local conformance = require "store_conformance"
local support = require "support"
local sqlite = require "cache_resource.sqlite"
local luasql = require "luasql.sqlite3"

describe("stores", function()
  local root, remove_root = support.temp_dir()
  local count = 0
  teardown(remove_root)

  local function sqlite_path()
    count = count + 1
    return ("%s/%d/cache_data.sqlite3"):format(root, count)
  end

  conformance("the SQLite store", function() return assert(sqlite.open(sqlite_path())) end, {
    limits = true,
    processes = true,
    child = function(store) return ("return require('cache_resource.sqlite').open(%q)"):format(tostring(store)) end,
    description = function(store) return (tostring(store):match("^" .. root .. "/%d+/cache_data%.sqlite3$")) end,
    -- another connection holds the write lock; the store waits 50 ms for it
    failing = function()
      local path = sqlite_path()
      local store = assert(sqlite.open(path, { timeout = 0.05 }))
      local env = luasql.sqlite3()
      local conn = assert(env:connect(path))
      assert(conn:execute("BEGIN IMMEDIATE"))
      return store, function()
        conn:execute("ROLLBACK")
        conn:close()
        env:close()
        store:close()
      end
    end,
  })

  -- A user's store: a table with the five methods over a Lua table, expiry
  -- by os.time() (whole seconds), generations counted per ns and in all.
  local function lua_store()
    local entries, gens, everything = {}, {}, 0
    local store = setmetatable({}, { __tostring = function() return "a plain Lua table" end })
    function store:get(ns, key)
      local e = entries[ns] and entries[ns][key]
      if e and e.expires and os.time() > e.expires then e = nil end
      return e and e.bytes
    end
    function store:set(ns, key, bytes, ttl)
      entries[ns] = entries[ns] or {}
      entries[ns][key] = { bytes = bytes, expires = ttl and os.time() + ttl }
      return true
    end
    function store:delete(ns, key)
      if entries[ns] then entries[ns][key] = nil end
      return true
    end
    function store:clear(ns)
      if ns then
        entries[ns], gens[ns] = nil, (gens[ns] or 0) + 1
      else
        entries, everything = {}, everything + 1
      end
      return true
    end
    function store:generation(ns)
      return everything + (gens[ns] or 0)
    end
    return store
  end

  conformance("a store in plain Lua", lua_store, {
    description = function() return "a plain Lua table" end,
    failing = function()
      local down = function() return nil, "the store is down" end
      return { get = down, set = down, delete = down, clear = down, generation = down }
    end,
  })
end)
