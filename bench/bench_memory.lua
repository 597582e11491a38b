-- Bytes per entry of one variant, in a process of its own (make bench runs
-- it): prints RSS and Lua heap growth per entry for COUNT string keys.
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
local values, keys = {}, {}
for i = 1, COUNT do values[i] = { i }; keys[i] = "key" .. i end
local f = cr(function(k) return values[tonumber(k:sub(4))] end)
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
