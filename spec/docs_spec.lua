-- The API reference documents every public function: LDoc (config.ld) is
-- run into a temporary directory, and every function the sources make
-- public must have an entry with a summary there. A new function without
-- a doc comment fails this spec. Needs `ldoc` (make docs installs it);
-- without it the spec is pending.
local support = require "support"

-- (support.shell keeps the sanitizer runtime of `make asan` out of the
-- shell and of LDoc, a Lua 5.1 program.)
local function run(command)
  local ok, out = support.shell(command .. " 2>&1")
  return ok, out
end

local read = support.read_file

-- The strings of a table constructor `local NAME = { "a", "b", ... }` in
-- a Lua source.
local function name_list(source, name)
  local body = source:match("\nlocal " .. name .. " = (%b{})")
  assert(body, "no table " .. name .. " in the source")
  local out = {}
  for s in body:gmatch('"([%w_]+)"') do out[#out + 1] = s end
  assert(#out > 0, "the table " .. name .. " is empty")
  return out
end

-- The Lua names of every luaL_Reg array in src/*.c, by the module the
-- file documents (its `@module`).
local function registered_c_names()
  local ok, files = run("ls src/*.c")
  assert(ok, files)
  local out = {}
  for path in files:gmatch("[^\n]+") do
    local source = read(path)
    local module = source:match("@module ([%w_.]+)") or "cache_resource"
    for body in source:gmatch("luaL_Reg%s+[%w_]+%[%]%s*=%s*(%b{})") do
      out[module] = out[module] or {}
      for name in body:gmatch('{%s*"([%w_]+)"%s*,') do table.insert(out[module], name) end
    end
  end
  return out
end

-- Functions a Lua module defines by name on its table (or class).
local function defined_functions(source, prefix)
  local out = {}
  for name in source:gmatch("\nfunction " .. prefix .. "([%w_]+)%(") do out[#out + 1] = name end
  return out
end

-- The reference's entry for `name` in a generated page: its anchor, and
-- the summary that follows it (nil when either is missing).
local function summary_of(html, name)
  local at = html:find('<a name = "' .. name .. '"></a>', 1, true)
  if not at then return nil end
  local dd = html:match("<dd>(.-)</dd>", at) or ""
  local text = dd:match("^(.-)<h3>") or dd
  text = text:gsub("<[^>]*>", ""):gsub("%s+", " ")
  if text:match("%S") then return text end
  return nil
end

local has_ldoc = run("command -v ldoc >/dev/null")

if not has_ldoc then
  pending("the API reference [skipped: ldoc is not installed; make docs installs it]")
  return
end

describe("the API reference (LDoc)", function()
  local dir, pages, log

  setup(function()
    local ok, out = run("mktemp -d")
    assert(ok, out)
    dir = out:gsub("\n$", "")
    ok, log = run("ldoc -d " .. dir .. " .")
    assert(ok, "ldoc failed:\n" .. log)
    pages = {}
    for _, module in ipairs({ "cache_resource", "cache_resource.data", "cache_resource.ui", "cache_resource.server",
      "cache_resource.cqueues", "cache_resource.sqlite", "cache_resource.redis" }) do
      pages[module] = read(dir .. "/modules/" .. module .. ".html")
    end
  end)

  teardown(function()
    if dir and dir:match("^/tmp/") then run("rm -rf " .. dir) end
  end)

  local function documents(module, names, what)
    local missing, seen = {}, {}
    for _, name in ipairs(names) do
      if not seen[name] and not summary_of(pages[module], name) then missing[#missing + 1] = name end
      seen[name] = true
    end
    assert(#missing == 0, module .. " has no documented entry for " .. what .. ": "
      .. table.concat(missing, ", "))
  end

  it("builds without a warning", function()
    for line in log:gmatch("[^\n]+") do
      local expected = line:match("^reading configuration from config%.ld$")
        or line:match("^output written to ") or line:match("^found master module\t")
      assert(expected, "LDoc says: " .. line)
    end
  end)

  it("documents every function the C module registers (luaL_Reg)", function()
    local by_module = registered_c_names()
    assert.is_true(#by_module.cache_resource >= 20, "found only " .. #by_module.cache_resource .. " functions")
    for module, names in pairs(by_module) do documents(module, names, "these luaL_Reg names") end
    assert.truthy(summary_of(pages.cache_resource, "cache_resource"), "the callable module itself")
    assert.truthy(summary_of(pages["cache_resource.data"], "cache_data"), "the callable cache_data")
  end)

  it("documents every ui element, widget and block function", function()
    local ui = require "cache_resource.ui"
    local names = {}
    for _, list in ipairs({ { "ui/elements", "ELEMENTS" }, { "ui/widgets", "WIDGETS" }, { "ui", "ALL" } }) do
      local source = read("lua/cache_resource/" .. list[1] .. ".lua")
      for _, name in ipairs(name_list(source, list[2])) do names[#names + 1] = name end
    end
    for name, v in pairs(ui) do
      if type(v) == "function" then names[#names + 1] = name end
    end
    names[#names + 1] = "sidebar"
    documents("cache_resource.ui", names, "these ui functions")
  end)

  it("documents the methods of ui's classes", function()
    local names = { "Block:NAME" }
    for _, class in ipairs({ "Page", "Session" }) do
      local source = read("lua/cache_resource/ui/" .. class:lower() .. ".lua")
      for _, name in ipairs(defined_functions(source, class .. ":")) do names[#names + 1] = class .. ":" .. name end
    end
    assert.is_true(#names >= 8)
    documents("cache_resource.ui", names, "these methods")
  end)

  it("documents every function of cache_resource.sqlite and every method of its stores", function()
    local source = read("src/sqlite/module.c")
    local names = {}
    for _, list in ipairs({ { "FUNCTIONS", "" }, { "METHODS", "store:" } }) do
      local body = assert(source:match("luaL_Reg " .. list[1] .. "%[%]%s*=%s*(%b{})"), list[1])
      for name in body:gmatch('{%s*"([%w_]+)"%s*,') do names[#names + 1] = list[2] .. name end
    end
    assert.is_true(#names >= 8)
    documents("cache_resource.sqlite", names, "these functions")
  end)

  it("documents every function of cache_resource.server and cache_resource.cqueues", function()
    local server = read("lua/cache_resource/server.lua")
    local names = defined_functions(server, "M%.")
    for _, name in ipairs(defined_functions(server, "Server:")) do names[#names + 1] = "Server:" .. name end
    assert.is_true(#names >= 10)
    documents("cache_resource.server", names, "these functions")
    local cq = read("lua/cache_resource/cqueues.lua")
    names = defined_functions(cq, "M%.")
    names[#names + 1] = "scheduler"
    documents("cache_resource.cqueues", names, "these functions")
  end)

  it("documents connect and every method of cache_resource.redis's stores", function()
    local source = read("lua/cache_resource/redis.lua")
    local names = defined_functions(source, "M%.")
    for _, name in ipairs(defined_functions(source, "Store:")) do
      if not name:match("^__") then names[#names + 1] = "Store:" .. name end
    end
    assert.is_true(#names >= 8)
    documents("cache_resource.redis", names, "these functions")
  end)
end)
