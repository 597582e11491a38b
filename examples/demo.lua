-- make demo: runs examples/app.lua several times in one session, like a user
-- interacting, printing each run's page and wall time, then the cache stats.
package.path = "lua/?.lua;examples/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath

local cache_resource = require "cache_resource"
local ui = require "cache_resource.ui"
local socket = require "socket"

-- The visits database stays from one `make demo` to the next, like the
-- store that keeps the cached query result (cache_data.store_path()): the
-- second `make demo` finds that result there.

local steps = {
  { "first run: builds the model and opens the database" },
  { "re-run: model and connection come from the cache; their UI is replayed" },
  { "the user moves 'Top words' to 8: only top_words runs again", { "Top words", 8 } },
  { "the user moves it back to 5: a hit, the slider replayed", { "Top words", 5 } },
  { "the user ticks 'Show raw data'", { "Show raw data", true } },
}

local session = ui.session("demo")
local times = {}
for i, step in ipairs(steps) do
  if step[2] then session:set(step[2][1], step[2][2]) end
  local t0 = socket.gettime()
  local page = session:run("examples/app.lua")
  times[i] = (socket.gettime() - t0) * 1000
  print(string.format("\n=== run %d: %s  (%.1f ms)", i, step[1], times[i]))
  for _, s in ipairs(page.spinners) do print("    (spinner was shown: " .. s .. ")") end
  print(page:render("text"))
  for _, el in ipairs(page) do
    if el.kind == "exception" then error("the app failed: " .. el.body) end
  end
end

print("\n=== cache_resource.stats()")
print(string.format("%-13s %-8s %-7s %7s %5s %6s %9s %11s %12s", "name", "kind", "scope", "entries", "hits",
  "misses", "evictions", "expirations", "replay_bytes"))
for _, s in ipairs(cache_resource.stats()) do
  print(string.format("%-13s %-8s %-7s %7d %5d %6d %9d %11d %12d", s.name, s.kind, s.scope, s.entries, s.hits,
    s.misses, s.evictions, s.expirations, s.replay_bytes))
end
for _, s in ipairs(cache_resource.stats()) do
  if s.persist then
    print(string.format("%s keeps its entries in %s too: store_hits %d, store_writes %d, store_errors %d", s.name,
      s.persist, s.store_hits, s.store_writes, s.store_errors))
  end
end
print(string.format("\nfirst run %.0f ms; later runs %.1f-%.1f ms", times[1],
  math.min(table.unpack(times, 2)), math.max(table.unpack(times, 2))))

session:close()
cache_resource.clear() -- closes the SQLite connection through on_release
