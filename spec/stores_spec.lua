-- The store conformance cases (spec/store_conformance.lua) on every store
-- there is: the SQLite store, and a store written in plain Lua, the way a
-- user writes their own (the example of docs/stores.md); the Redis store
-- passes them in redis_store_spec.lua, beside the server it needs. A new store is a
-- factory and a capability table.
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

  -- A user's store: the one docs/stores.md shows, a table with the five
  -- methods over a Lua table (expiry by os.time(), whole seconds).
  local doc = support.read_file("docs/stores.md")
  local code = assert(doc:match("```lua\n(local function table_store%(%).-)```"), "no table_store in docs/stores.md")
  local table_store = assert(load(code .. "\nreturn table_store", "=docs/stores.md", "t"))()

  conformance("the plain-Lua store of docs/stores.md", table_store, {
    description = function() return "a Lua table" end,
    failing = function()
      local down = function() return nil, "the store is down" end
      return { get = down, set = down, delete = down, clear = down, generation = down }
    end,
  })
end)
