-- make e2e, served replicas: two server processes of the demo app share one
-- Redis (CR_DEMO_REDIS_PORT). The first serves a page and so computes the
-- cached query; the second replica's first page shows that result without
-- computing it: its /stats counts a store hit and no miss.
--   lua5.4 spec/e2e/replicas.lua FIRST_URL SECOND_URL
package.path = "spec/e2e/?.lua;" .. package.path
local http = require "socket.http"
local json = require "dkjson"

local first, second = arg[1], arg[2]
local checks = require "checks" -- spec/e2e/checks.lua
local check = checks.check

local function get(url)
  local body, code = http.request(url)
  assert(code == 200, ("GET %s -> %s"):format(url, tostring(code)))
  return body
end

-- The row of recent_visits in a server's /stats.
local function visits_row(url)
  for _, row in ipairs(json.decode(get(url .. "/stats"))) do
    if row.name == "recent_visits" then return row end
  end
  error("no recent_visits in " .. url .. "/stats")
end

-- The "Recent visits" caption of a page.
local function caption(page)
  return page:match("Recent visits %(a cached query[^<]-%): ([^<]*)")
end

local shown_first = caption(get(first .. "/"))
check(shown_first ~= nil and shown_first:find("#1 at", 1, true) ~= nil,
  "the first replica's page shows the query result it computed: " .. tostring(shown_first))
local a = visits_row(first)
check(a.misses == 1 and a.store_writes == 1 and a.persist:match("^redis://") ~= nil,
  ("the first replica computed it and wrote it to %s (misses %d, store_writes %d)"):format(a.persist, a.misses,
    a.store_writes))

local shown_second = caption(get(second .. "/"))
check(shown_second == shown_first, "the second replica's first page shows the same result: " .. tostring(shown_second))
local b = visits_row(second)
check(b.store_hits == 1 and b.misses == 0,
  ("the second replica found it in the store without computing it (store_hits %d, misses %d)"):format(b.store_hits,
    b.misses))

checks.finish("e2e replicas")
