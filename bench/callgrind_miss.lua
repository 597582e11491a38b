-- Instructions per miss, for `make bench-callgrind`: like
-- callgrind_hit.lua, two runs that differ only in the number of misses
-- after the same warm-up, so the difference divided by the extra misses
-- is the cost of one miss. Cases: miss700, miss1000, miss1024 (max_entries
-- = N, against a hand-written LRU memo of capacity N, both full before the
-- misses start: each miss evicts) and unbounded (against a plain table
-- memo). The target is cr or memo.
package.path = "lua/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local cr = require "cache_resource"
local case, n, which = arg[1], tonumber(arg[2]), arg[3]
local capacity = tonumber(case:match("^miss(%d+)$"))
local WARM = capacity or 1000
-- The same keys in every run, whatever n: enough that no key comes back.
local KEYS = 1 << 16
assert(WARM + n <= KEYS, "too many misses for the keys")
local keys = {}
for i = 1, KEYS do keys[i] = "k" .. i end
local function identity(k) return k end

-- bench.lua's lru_memo, the same code
local function lru_memo(fn, cap, add_first)
  local nodes, count = {}, 0
  local ring = {}
  ring.next, ring.prev = ring, ring
  return function(k)
    local node = nodes[k]
    if node then
      if ring.next ~= node then
        local before, after = node.prev, node.next
        before.next = after; after.prev = before
        node.prev, node.next = ring, ring.next
        ring.next.prev = node; ring.next = node
      end
      return node.value
    end
    local v = fn(k)
    if add_first then
      node = { key = k, value = v, prev = ring, next = ring.next }
      ring.next.prev = node; ring.next = node
      nodes[k] = node
      if count == cap then
        local last = ring.prev
        ring.prev = last.prev; last.prev.next = ring
        nodes[last.key] = nil
      else
        count = count + 1
      end
      return v
    end
    if count == cap then
      local last = ring.prev
      ring.prev = last.prev; last.prev.next = ring
      nodes[last.key] = nil
    else
      count = count + 1
    end
    node = { key = k, value = v, prev = ring, next = ring.next }
    ring.next.prev = node; ring.next = node
    nodes[k] = node
    return v
  end
end

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
