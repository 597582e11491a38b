-- Bytes per entry of one variant, in a process of its own (make bench runs
-- it): prints RSS and Lua heap growth per entry for COUNT string keys with
-- table values, both read after a full collection.
package.path = "lua/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local variant, COUNT = arg[1], tonumber(arg[2])
local cr = require "cache_resource"
local function rss_bytes()
  local f = io.open("/proc/self/statm")
  if not f then return 0 end
  local _, resident = f:read("n", "n")
  f:close()
  return resident * 4096
end
-- The keys, the values and the function's lookup table exist before the
-- first reading, so the growth is the entries' alone: the cached function
-- allocates nothing of its own (no substring or number to find a value).
local values, keys, by_key = {}, {}, {}
for i = 1, COUNT do
  values[i] = { i }
  keys[i] = "key" .. i
  by_key[keys[i]] = values[i]
end
local f = cr(function(k) return by_key[k] end)
local memo = {}
collectgarbage(); collectgarbage()
local rss0, heap0 = rss_bytes(), collectgarbage("count") * 1024
if variant == "memo" then
  for i = 1, COUNT do memo[keys[i]] = values[i] end
else
  for i = 1, COUNT do f(keys[i]) end
end
collectgarbage(); collectgarbage()
print((rss_bytes() - rss0) / COUNT, (collectgarbage("count") * 1024 - heap0) / COUNT)
-- Read after the measurement: the memo must still hold every entry then.
assert(variant ~= "memo" or memo[keys[COUNT]] == values[COUNT])
