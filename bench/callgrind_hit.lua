-- Instructions per hit, for `make bench-callgrind`: run under callgrind
-- twice with different call counts; the difference divided by the extra
-- calls is the cost of one hit, free of start-up.
package.path = "lua/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local cr = require "cache_resource"
local case, n = arg[1], tonumber(arg[2])
local function work(a, b, c) return { a, b, c } end
local f = cr(function(...) return work(...) end,
  { name = "callgrind " .. case, scope = case == "session" and "session" or nil })
local memo, cache, get = nil, {}, nil
if case == "none" then
  get = function() local v = memo; if v == nil then v = {}; memo = v end; return v end
elseif case == "string" then
  get = function(k) local v = cache[k]; if v == nil then v = work(k); cache[k] = v end; return v end
elseif case == "scalars" then
  get = function(a, b, c)
    local t1 = cache[a]; if not t1 then t1 = {}; cache[a] = t1 end
    local t2 = t1[b]; if not t2 then t2 = {}; t1[b] = t2 end
    local v = t2[c]; if v == nil then v = work(a, b, c); t2[c] = v end
    return v
  end
elseif case == "session" then
  -- bench.lua's per-session memo; the session is set once, before the
  -- loop, for both (cr.set_session for f, session_id for the memo)
  local session_id = "user3"
  get = function(k)
    local m = cache[session_id]; if m == nil then m = {}; cache[session_id] = m end
    local v = m[k]; if v == nil then v = work(k); m[k] = v end
    return v
  end
  cr.set_session(session_id)
end
-- floor: a C function that does next to nothing with the same arguments
local floor = ({ none = coroutine.isyieldable, string = rawlen, scalars = rawequal, session = rawlen })[case]
-- api: the C API calls of a hit and nothing else (bench/api_floor.c)
local api = arg[3] == "api" and require("bench_api_floor").new(case == "none" and {} or work("db", 42, true))
local target = ({ memo = get, floor = floor, api = api })[arg[3]] or f
if case == "none" then for _ = 1, n do target() end
elseif case == "string" or case == "session" then local a = "users.db"; for _ = 1, n do target(a) end
else local a, b, c = "db", 42, true; for _ = 1, n do target(a, b, c) end end
