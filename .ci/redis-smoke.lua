-- Run by .ci/run from outside the checkout, after the Redis rock was
-- installed into a fresh LuaRocks tree (arg[1]): loads cache_resource.redis
-- and its C part from that tree, and stores, reads and clears an entry on
-- the redis-server CI started (port arg[2]).
local tree, port = assert(arg[1], "usage: redis-smoke.lua TREE PORT"), assert(tonumber(arg[2]), "no port")
local v = _VERSION:match("%d+%.%d+")
for name, path in pairs({ ["cache_resource.redis"] = package.path, ["cache_resource.redis_resp"] = package.cpath }) do
  local found = assert(package.searchpath(name, path), name .. " is not installed")
  assert(found:sub(1, #tree + 1) == tree .. "/", name .. " was loaded from " .. found .. ", not from the tree")
end

local store = require("cache_resource.redis").connect { port = port, prefix = "cr-rock-smoke:" .. v .. ":" }
local ns, key, bytes = ("%032x"):format(1), ("%032x"):format(2), "rock\0smoke"
assert(store:set(ns, key, bytes, 60))
assert(store:get(ns, key) == bytes, "the entry read back differs")
assert(store:clear(nil))
assert(store:get(ns, key) == nil, "the entry outlived clear(nil)")
print(("redis rock smoke (%s): ok, %s"):format(_VERSION, tostring(store)))
