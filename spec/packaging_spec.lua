-- The rockspec must build what the Makefile builds.
describe("packaging", function()
  it("the rockspec lists every C source in src/", function()
    local f = assert(io.open("rockspec/cache_resource-scm-1.rockspec"))
    local rockspec = f:read("a")
    f:close()
    local p = assert(io.popen("ls src/*.c"))
    local count = 0
    for file in p:lines() do
      count = count + 1
      assert.truthy(rockspec:find('"' .. file .. '"', 1, true), file .. " missing from the rockspec")
    end
    p:close()
    assert.is_true(count >= 6)
  end)

  it("the rockspec installs every pure-Lua module in lua/", function()
    local f = assert(io.open("rockspec/cache_resource-scm-1.rockspec"))
    local rockspec = f:read("a")
    f:close()
    local p = assert(io.popen("cd lua && find . -name '*.lua'"))
    local count = 0
    for file in p:lines() do
      count = count + 1
      local path = "lua/" .. file:sub(3)
      local module = file:sub(3, -5):gsub("/", ".")
      assert.truthy(rockspec:find('["' .. module .. '"] = "' .. path .. '"', 1, true), path .. " missing from the rockspec")
    end
    p:close()
    assert.is_true(count >= 1)
  end)

  it("loads as the module cache_resource with a callable module table", function()
    local cr = require "cache_resource"
    assert.equal("table", type(cr))
    assert.equal("function", type(getmetatable(cr).__call))
    for _, name in ipairs({ "clear", "stats", "expire", "hash", "set_clock", "set_waiter", "set_session", "end_session" }) do
      assert.equal("function", type(cr[name]), name)
    end
  end)
end)
