-- The C core stands on layers: each file of src/ calls only the files below
-- it in src/layers.txt, but for the two pairs declared there, and the
-- built module exports its entry point alone. Compiles src/*.c and reads
-- the objects with nm (spec/layers.lua, also run by `make layers`).
local support = require "support"
local layers = require "layers"

local BUILD = os.getenv("CR_BUILD") or "build"
local LUA_INC = "/usr/include/lua" .. _VERSION:match("%d+%.%d+")

local function has(tool)
  return (support.shell("command -v " .. tool .. " >/dev/null"))
end

-- A table and objects made up for the check itself: `calls` maps a file to
-- the files it calls, through one function each (named after the callee).
local function objects(calls)
  local objs = {}
  local function obj(file)
    objs[file] = objs[file] or { defs = { [file:gsub("%.c$", "_fn")] = true }, undefs = {} }
    return objs[file]
  end
  for from, tos in pairs(calls) do
    obj(from)
    for _, to in ipairs(tos) do
      obj(to)
      objs[from].undefs[to:gsub("%.c$", "_fn")] = true
    end
  end
  return objs
end

local TABLE = [[
# a comment
top   a.c b.c
low   c.c d.c
pair  c.c d.c
]]

describe("the layer check", function()
  local t = assert(layers.read_table(TABLE))

  it("accepts calls down the layers, along a layer's line and both ways within a pair", function()
    local problems = layers.check(t, objects { ["a.c"] = { "b.c", "c.c" }, ["b.c"] = { "d.c" },
      ["c.c"] = { "d.c" }, ["d.c"] = { "c.c" } })
    assert.same({}, problems)
  end)

  it("fails on a call up the layers, naming caller, callee and what is called", function()
    local problems = layers.check(t, objects { ["a.c"] = { "b.c" }, ["c.c"] = { "a.c", "d.c" },
      ["d.c"] = { "c.c" } })
    assert.equal(1, #problems)
    assert.matches("c.c (low) calls up into a.c (top): a_fn", problems[1], 1, true)
  end)

  it("fails on a call back along a layer's line", function()
    local problems = layers.check(t, objects { ["b.c"] = { "a.c" }, ["c.c"] = { "d.c" }, ["d.c"] = { "c.c" } })
    assert.equal(1, #problems)
    assert.matches("b.c (top) calls up into a.c (top)", problems[1], 1, true)
  end)

  it("fails on a C file without a layer, saying where to assign it", function()
    local problems = layers.check(t, objects { ["a.c"] = { "b.c" }, ["c.c"] = { "d.c", "cr_codec.c" },
      ["d.c"] = { "c.c" } })
    assert.equal(1, #problems)
    assert.matches("src/cr_codec.c has no layer: add it to a layer's line in src/layers.txt", problems[1], 1, true)
  end)

  it("fails on a file in the table that is not in src/, and on a pair that no longer calls each other", function()
    local problems = layers.check(t, objects { ["a.c"] = { "c.c" }, ["c.c"] = { "d.c" } })
    assert.equal(2, #problems)
    assert.matches("names b.c, which is not in src/", problems[1], 1, true)
    assert.matches("declares the pair c.c d.c, but they no longer call each other", problems[2], 1, true)
  end)

  it("rejects a table naming a file twice or a pair of files without a layer", function()
    assert.same({ nil, "b.c is in two places" }, { layers.read_table("x a.c b.c\ny b.c\n") })
    assert.same({ nil, "the pair a.c z.c names z.c, which has no layer" },
      { layers.read_table("x a.c\npair a.c z.c\n") })
  end)
end)

if not (has("cc") and has("nm")) then
  pending("the C core's layers [skipped: needs cc and nm (binutils), which are not installed]")
else
  describe("the C core's layers (src/layers.txt)", function()
    local t, objs, problems, calls

    setup(function()
      local err
      t, err = layers.read_table(support.read_file(layers.TABLE))
      assert(t, err)
      local ok, dir = support.shell("mktemp -d")
      assert(ok, dir)
      dir = dir:gsub("%s+$", "")
      objs, err = layers.compile(support.shell, dir, LUA_INC)
      support.shell("rm -rf " .. support.shell_quote(dir))
      assert(objs, err)
      problems, calls = layers.check(t, objs)
    end)

    it("gives every C file of src/ a layer and finds calls between them", function()
      local ok, list = support.shell("ls src/*.c")
      assert(ok, list)
      for src in list:gmatch("[^\n]+") do
        local file = src:match("[^/]+$")
        assert.truthy(t.rank[file], file .. " has no layer")
        assert.truthy(objs[file], file .. " was not compiled")
      end
      assert.truthy(#calls > 0)
    end)

    it("has each file call only the files below it, but for the two pairs that call each other", function()
      assert.same({}, problems)
      assert.same({ { "cr_call.c", "cr_refresh.c" }, { "cr_store.c", "cr_front.c" } }, t.pair_list)
    end)
  end)
end

if not has("nm") then
  pending("the module's exports [skipped: needs nm (binutils), which is not installed]")
else
  describe("the module's exports", function()
    it("are luaopen_cache_resource alone: every other function is private to the module", function()
      local ok, out = support.shell("nm -D --defined-only " .. BUILD .. "/cache_resource.so")
      assert(ok, out)
      local names = {}
      for name in out:gmatch("%x+ %a (%S+)") do names[#names + 1] = name end
      assert.same({ "luaopen_cache_resource" }, names)
    end)
  end)
end
