-- The rock as a user gets it: this checkout's files built and installed by
-- `luarocks make` into a fresh tree (the README's quick start, offline),
-- then the installed cache-resource run from outside the checkout: its
-- version, its help, a missing app, and real apps (the quick start's
-- app.lua among them) served and fetched once over loopback from the
-- modules of that tree.
local support = require "support"

local VERSION = _VERSION:match("%d+%.%d+")

local function has(text, fragment) return text:find(fragment, 1, true) ~= nil end

describe("the rock installed into a fresh tree", function()
  local work, tree, command, built, log

  setup(function()
    work = support.tmpdir()
    tree = work .. "/tree"
    local src = work .. "/src"
    -- the files as they are now, without what the builds here leave
    local copied, out = support.shell(string.format("mkdir -p %s && tar -cf - --exclude=./.git --exclude=./build "
      .. "--exclude=./build53 --exclude=./build-asan --exclude=./dist --exclude='*.o' --exclude='*.so' . "
      .. "| tar -xf - -C %s 2>&1", support.shell_quote(src), support.shell_quote(src)))
    assert(copied, out)
    -- -O0: this checks what is installed, not how fast it runs
    built, log = support.shell(string.format("cd %s && luarocks --lua-version=%s make --tree=%s "
      .. "rockspec/cache_resource-scm-1.rockspec CFLAGS='-O0 -fPIC' 2>&1", support.shell_quote(src), VERSION,
      support.shell_quote(tree)))
    command = support.shell_quote(tree .. "/bin/cache-resource")
  end)

  teardown(function()
    if work then support.remove_tree(work) end
  end)

  -- The installed command from a directory outside the checkout: status,
  -- stdout, stderr.
  local function run(args)
    local p = support.spawn("env -C " .. support.shell_quote(work) .. " " .. command .. " " .. args)
    return p:finish()
  end

  it("installs the command cache-resource, a wrapper that runs it with this Lua", function()
    assert(built, log)
    local wrapper = support.read_file(tree .. "/bin/cache-resource")
    assert.truthy(has(wrapper, "lua" .. VERSION), wrapper)
    assert.truthy(has(wrapper, tree .. "/share/lua/" .. VERSION), wrapper)
  end)

  it("answers --version and --help", function()
    assert(built, log)
    local code, out, err = run("--version")
    assert.equal(0, code, err)
    assert.equal("cache-resource " .. require("cache_resource")._VERSION .. " (" .. _VERSION .. ")\n", out)
    code, out, err = run("--help")
    assert.equal(0, code, err)
    assert.truthy(has(out, "Usage: cache-resource run APP.lua [--host H] [--port N] [--idle S] [--max-sessions N]"))
  end)

  it("exits 2 naming a missing app", function()
    assert(built, log)
    local code, out, err = run("run missing.lua")
    assert.equal(2, code)
    assert.equal("", out)
    assert.equal("cache-resource: the app does not load: cannot open missing.lua: No such file or directory\n", err)
  end)

  -- Serves work/app.lua with the installed command: the page of one GET /,
  -- and the command's exit status and stderr after SIGINT.
  local function serve_once()
    local p = support.spawn("env -C " .. support.shell_quote(work) .. " " .. command .. " run app.lua --port 0")
    local url = p:first_line()
    local status, body
    if url then status, body = support.http_get(url) end
    local code, _, err = p:finish("INT")
    assert(url, "no URL on stdout: " .. err)
    assert.equal(200, status)
    return body, code, err
  end

  it("serves the README's quick-start app.lua", function()
    assert(built, log)
    local app = support.read_file("README.md"):match("## Quick start\n.-```lua\n(%-%- app%.lua\n.-)```")
    assert(app, "README.md's quick start has no ```lua block starting with -- app.lua")
    support.write_file(work .. "/app.lua", app)
    local body, code, err = serve_once()
    assert.truthy(has(body, '<h1 class="cr-title">Squares</h1>'), body)
    assert.truthy(has(body, "Built a table of 100 squares"))
    assert.truthy(has(body, "The last square is 10000"))
    assert.falsy(has(body, "cr-alert cr-exception"), body)
    assert.equal(0, code, err)
  end)

  it("serves an app from the tree's modules and answers a page view over loopback", function()
    assert(built, log)
    support.write_file(work .. "/app.lua", [[
local cr = require "cache_resource"
local ui = require "cache_resource.ui"
local square = cr(function(x) return x * x end)
ui.title("Installed app")
ui.write("square " .. square(12))
ui.write("core from " .. package.searchpath("cache_resource", package.cpath))
]])
    local body, code, err = serve_once()
    assert.truthy(has(body, '<h1 class="cr-title">Installed app</h1>'))
    assert.truthy(has(body, "square 144"))
    assert.truthy(has(body, "core from " .. tree .. "/lib/lua/" .. VERSION .. "/cache_resource.so"), body)
    assert.equal(0, code, err)
  end)
end)
