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
-- What a program keeps per entry: its key (a short string it makes), its
-- value (a table the function makes) and the cache's own memory. Both
-- variants make the same key and value, so the difference is the cache's.
local made = 0
local f = cr(function() made = made + 1; return { made } end)
local memo = {}
collectgarbage(); collectgarbage()
local rss0, heap0 = rss_bytes(), collectgarbage("count") * 1024
if variant == "memo" then
  for i = 1, COUNT do
    local k = "key" .. i
    if memo[k] == nil then memo[k] = { i } end
  end
else
  for i = 1, COUNT do f("key" .. i) end
end
collectgarbage(); collectgarbage()
print((rss_bytes() - rss0) / COUNT, (collectgarbage("count") * 1024 - heap0) / COUNT)
-- Read after the measurement: the memo must still hold every entry then.
assert(variant ~= "memo" or memo["key" .. COUNT][1] == COUNT)
assert(variant == "memo" or f("key" .. COUNT)[1] == COUNT)
