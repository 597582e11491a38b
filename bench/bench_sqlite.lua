-- make bench, the SQLite store's rows: run by bench/bench.lua with its
-- group() (rounds interleaved, ratios to the base row) and QUICK. Each row
-- beside the same work done by hand through SQLite's C API with prepared
-- statements (bench/sqlite_bare.c): a point read or write of the same
-- bytes. Times are CPU time (os.clock), like every row of make bench; a
-- write's wait for the disk is not in them.
local group, QUICK = ...
local sqlite = require "cache_resource.sqlite"
local bare_sqlite = require "bench_sqlite_bare"

local TARGET = 1.5 -- the store adds at most this over the bare statement
local dir = os.tmpname()
os.remove(dir)
local store = assert(sqlite.open(dir .. "/store.sqlite3"))
local bare = bare_sqlite.open(dir .. "/bare.sqlite3")
local NS, BOUNDED = ("a"):rep(32), ("b"):rep(32)
local KEYS = 256 -- a working set that SQLite's page cache holds
local keys = {}
for i = 1, KEYS do keys[i] = ("%032x"):format(i) end

local function against_target(r, name)
  local mine = r[name]
  mine.row.note = ("target <= %.1fx: %s"):format(TARGET, mine.ratio <= TARGET and "met" or "NOT met")
end

for _, size in ipairs({ 1024, 100 * 1024 }) do
  local label = size == 1024 and "1 KB" or "100 KB"
  local bytes = ("entry\0"):rep(size // 6 + 1):sub(1, size)
  for i = 1, KEYS do
    assert(store:set(NS, keys[i], bytes))
    bare:set(keys[i], bytes)
  end
  local reads = (QUICK and 2000 or 20000) // (size == 1024 and 1 or 10)
  against_target(group("SQLite get " .. label, {
    { "bare SQLite point read", function(n) for i = 1, n do bare:get(keys[i % KEYS + 1]) end end, base = true },
    { "store:get (cache_resource.sqlite)", function(n)
      for i = 1, n do store:get(NS, keys[i % KEYS + 1]) end
    end },
  }, reads), "store:get (cache_resource.sqlite)")
  local writes = (QUICK and 200 or 2000) // (size == 1024 and 1 or 4)
  against_target(group("SQLite set " .. label, {
    { "bare SQLite point write", function(n) for i = 1, n do bare:set(keys[i % KEYS + 1], bytes) end end,
      base = true, note = "INSERT OR REPLACE, its own transaction" },
    { "store:set (cache_resource.sqlite)", function(n)
      for i = 1, n do store:set(NS, keys[i % KEYS + 1], bytes) end
    end },
  }, writes), "store:set (cache_resource.sqlite)")
end

-- Keeping the least-recently-used order of bounded entries: an UPDATE at
-- every read (the bare row), or the store's reads written in batches.
do
  local bytes = ("x"):rep(1024)
  local small = {}
  for i = 1, KEYS do
    small[i] = "lru" .. keys[i]
    bare:set(small[i], bytes)
    assert(store:set(BOUNDED, keys[i], bytes, nil, { max_entries = 10 * KEYS }))
  end
  local reads = QUICK and 1000 or 10000
  group("SQLite LRU read 1 KB", {
    { "bare SQLite point read", function(n) for i = 1, n do bare:get(small[i % KEYS + 1]) end end, base = true },
    { "bare read + last-used UPDATE", function(n) for i = 1, n do bare:get_used(small[i % KEYS + 1]) end end,
      note = "a write transaction at every read" },
    { "store:get, bounded entries", function(n) for i = 1, n do store:get(BOUNDED, keys[i % KEYS + 1]) end end,
      note = "reads written in batches" },
  }, reads)
end

store:close()
bare = nil -- luacheck: ignore 311 (collected below)
collectgarbage()
os.execute("rm -rf " .. dir)
