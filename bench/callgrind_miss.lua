-- Instructions per miss, for `make bench-callgrind`: like
-- callgrind_hit.lua, two runs that differ only in the number of misses
-- after the same warm-up, so the difference divided by the extra misses
-- is the cost of one miss. Cases: miss700, miss1000, miss1024 (max_entries
-- = N, against a hand-written LRU memo of capacity N, both full before the
-- misses start: each miss evicts) and unbounded (against a plain table
-- memo). The target is cr or memo.
package.path = "lua/?.lua;bench/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local cr = require "cache_resource"
local lru_memo = require "lru_memo"
local case, n, which = arg[1], tonumber(arg[2]), arg[3]
local capacity = tonumber(case:match("^miss(%d+)$"))
local WARM = capacity or 1000
-- The same keys in every run, whatever n: enough that no key comes back.
local KEYS = 1 << 16
assert(WARM + n <= KEYS, "too many misses for the keys")
local keys = {}
for i = 1, KEYS do keys[i] = "k" .. i end
local function identity(k) return k end

local target
if which == "memo" and capacity then
  target = lru_memo(identity, capacity)
elseif which == "memo2" then
  target = lru_memo(identity, capacity, true)
elseif which == "memo" then
  local memo = {}
  target = function(k)
    local v = memo[k]
    if v == nil then v = identity(k); memo[k] = v end
    return v
  end
else
  target = cr(identity, { max_entries = capacity, name = "callgrind " .. case })
end
for i = 1, WARM do target(keys[i]) end
for i = WARM + 1, WARM + n do target(keys[i]) end
if which == "cr" then assert(cr.stats(target).hits == 0, "a miss run hit") end
