-- Run by .ci/run from outside the checkout, after the cache_resource-sqlite
-- source rock was installed into a fresh LuaRocks tree (arg[1]): loads
-- cache_resource.sqlite from that tree, opens a store in a new directory,
-- and checks that an entry written by one store object is read back whole
-- by another, and that the directory and file were made private.
local tree = assert(arg[1], "usage: sqlite-smoke.lua TREE")
local v = _VERSION:match("%d+%.%d+")
package.cpath = tree .. "/lib/lua/" .. v .. "/?.so;" .. package.cpath

local sqlite = require "cache_resource.sqlite"
local found = assert(package.searchpath("cache_resource.sqlite", package.cpath))
assert(found:sub(1, #tree + 1) == tree .. "/", "cache_resource.sqlite was loaded from " .. found)

local dir = os.tmpname()
os.remove(dir)
local path = dir .. "/store/cache_data.sqlite3"
local ns, key = ("a"):rep(32), ("b"):rep(32)
local bytes = "entry\0with\0NULs" .. ("x"):rep(100000)
local writer = assert(sqlite.open(path))
assert(writer:set(ns, key, bytes, 3600))
writer:close()
local reader = assert(sqlite.open(path))
assert(reader:get(ns, key) == bytes, "the entry did not come back whole")
reader:close()
local modes = io.popen("stat -c %a " .. dir .. "/store " .. path):read("a")
assert(modes == "700\n600\n", "the store is not private: " .. modes)
os.execute("rm -rf " .. dir)

print(string.format("sqlite smoke (%s): ok, %s", _VERSION, found))
