-- Error messages that say what happened: option values named with their
-- type, allocation failures reported as such.
local cr = require "cache_resource"
local support = require "support"

local error_of = support.error_of

describe("option messages name what was given", function()
  before_each(support.reset)

  local function wrap_error(opts)
    return error_of(cr, function() end, opts)
  end

  it("max_entries given a string", function()
    assert.matches([[cache_resource: option 'max_entries' must be an integer >= 1, got a string "10"]],
      wrap_error({ max_entries = "10" }), 1, true)
  end)

  it("max_entries given other wrong values", function()
    assert.matches("must be an integer >= 1, got 2.5", wrap_error({ max_entries = 2.5 }), 1, true)
    assert.matches("must be an integer >= 1, got 0", wrap_error({ max_entries = 0 }), 1, true)
    assert.matches("must be an integer >= 1, got a boolean (true)", wrap_error({ max_entries = true }), 1, true)
    assert.matches("must be an integer >= 1, got a table", wrap_error({ max_entries = {} }), 1, true)
  end)

  it("the decorator form checks them where they are written", function()
    assert.matches([[option 'max_entries' must be an integer >= 1, got a string "10"]],
      error_of(cr, { max_entries = "10" }), 1, true)
  end)

  it("ttl", function()
    assert.matches("option 'ttl' must be >= 0 seconds, got -1", wrap_error({ ttl = -1 }), 1, true)
    assert.matches([[option 'ttl' must be a number of seconds or a duration string like "1h", got a boolean (false)]],
      wrap_error({ ttl = false }), 1, true)
    assert.matches("cannot read the duration 'soon'", wrap_error({ ttl = "soon" }), 1, true)
    assert.matches("cannot read the duration", wrap_error({ ttl = "1h\0junk" }), 1, true)
  end)

  it("long strings are cut short", function()
    local err = wrap_error({ scope = string.rep("s", 100) })
    assert.matches([[option 'scope' must be "global" or "session", got a string "]] .. string.rep("s", 40) .. [[..."]],
      err, 1, true)
  end)

  it("the other options", function()
    assert.matches([[option 'scope' must be "global" or "session", got a string "sessions"]],
      wrap_error({ scope = "sessions" }), 1, true)
    assert.matches("option 'show_time' must be a boolean, got 1", wrap_error({ show_time = 1 }), 1, true)
    assert.matches([[option 'name' must be a non-empty string, got a string ""]], wrap_error({ name = "" }), 1, true)
    assert.matches("option 'validate' must be a function, got a string", wrap_error({ validate = "yes" }), 1, true)
  end)
end)

describe("running out of memory", function()
  -- A child Lua with a memory cap: a 65 MiB string fits, the 128 MiB buffer
  -- a key or a replay record of it needs does not. Under `make asan` the
  -- cap is the sanitizer's largest allocation (it cannot run under ulimit).
  it("is reported as such, for keys and for replay records", function()
    local dir = os.getenv("CR_BUILD") or "build"
    local cap
    if (os.getenv("LD_PRELOAD") or ""):find("asan", 1, true) then
      cap = 'ASAN_OPTIONS="$ASAN_OPTIONS:allocator_may_return_null=1:max_allocation_size_mb=100" '
    else
      cap = "ulimit -v 170000; "
    end
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(([[
      package.cpath = "./%s/?.so;" .. package.cpath
      local cr = require "cache_resource"
      local s = string.rep("x", 65 * 1024 * 1024)
      collectgarbage()
      local function try(fn) local ok, err = pcall(fn); print(ok and "no error" or err) end
      local big_key = cr(function(x) return 1 end, { name = "big_key" })
      try(function() return big_key(s) end)
      local rec = cr.replayable(function() end, "oom.rec")
      local big_record = cr(function() rec(s); return 1 end, { name = "big_record" })
      try(function() return big_record() end)
      print("still working", #cr.hash(1))
    ]]):format(dir))
    f:close()
    local lua = os.getenv("CR_LUA") or ("lua" .. _VERSION:match("%d+%.%d+")) -- the interpreter running this suite
    local p = io.popen(cap .. lua .. " " .. script .. " 2>&1")
    local out = p:read("a")
    p:close()
    os.remove(script)
    assert.matches("cache_resource: out of memory while building a key for big_key", out, 1, true)
    assert.matches("cache_resource: out of memory (recording a UI call", out, 1, true)
    assert.not_matches("invalid option", out, 1, true)
    assert.matches("still working\t32", out, 1, true)
  end)
end)
