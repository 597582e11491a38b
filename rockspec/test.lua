-- `luarocks test`: builds the module for the Lua running this script (the
-- one luarocks was told with --lua-version) and runs the spec suite with it.
local version = assert(_VERSION:match("^Lua (5%.%d)$"), "needs Lua 5.3 or 5.4")
local ok = os.execute("make --no-print-directory LUA=lua" .. version .. " test")
os.exit(ok and 0 or 1)
