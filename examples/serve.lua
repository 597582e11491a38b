-- The demo app as a web page from this checkout, without installing it:
--   lua5.4 examples/serve.lua [APP.lua] [--port N ...]
-- is `cache-resource run APP.lua [--port N ...]` (the command the rock
-- installs; see cache-resource --help) with this checkout's lua/ and build/
-- on the module paths. APP.lua defaults to the demo, examples/app.lua.
package.path = "lua/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath

local argv = { "run" }
if arg[1] == nil or arg[1]:sub(1, 1) == "-" then argv[2] = "examples/app.lua" end
for _, a in ipairs(arg) do argv[#argv + 1] = a end
os.exit(require("cache_resource.cli").main(argv))
