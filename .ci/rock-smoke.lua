-- Run by .ci/run from outside the checkout, after the source rock was
-- installed into a fresh LuaRocks tree (arg[1]): loads cache_resource and
-- cache_resource.ui from that tree, wraps a function, calls it twice and
-- checks it ran once, then once more inside a UI session, whose re-run
-- replays what the computation showed.
local tree = assert(arg[1], "usage: rock-smoke.lua TREE")
local v = _VERSION:match("%d+%.%d+")
package.path = tree .. "/share/lua/" .. v .. "/?.lua;" .. package.path
package.cpath = tree .. "/lib/lua/" .. v .. "/?.so;" .. package.cpath

local cache_resource = require "cache_resource"
local ui = require "cache_resource.ui"
for name, path in pairs({ cache_resource = package.cpath, ["cache_resource.ui"] = package.path }) do
  local found = assert(package.searchpath(name, path))
  assert(found:sub(1, #tree + 1) == tree .. "/", name .. " was loaded from " .. found .. ", not from the tree")
end

local runs = 0
local square = cache_resource(function(x) runs = runs + 1; return x * x end)
assert(square(12) == 144)
assert(square(12) == 144)
assert(runs == 1, "the cached function ran " .. runs .. " times for two equal calls")

local shown = 0
local greet = cache_resource(function(name) shown = shown + 1; ui.write("hello " .. name); return #name end)
local session = ui.session("smoke")
local page
for _ = 1, 2 do page = session:run(function() ui.write(greet("rock")) end) end
assert(shown == 1, "the UI computation ran " .. shown .. " times in two runs")
local text = page:render("text")
assert(text:find("hello rock", 1, true) and text:find("4", 1, true), "the re-run page lacks the replay: " .. text)
session:close()

print(string.format("rock smoke (%s): ok, %s", _VERSION, package.searchpath("cache_resource", package.cpath)))
