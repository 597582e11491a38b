-- What a user installing the rocks relies on: the rockspecs build what the
-- Makefile builds, install every module, need only the xxHash header (the
-- Redis rock: hiredis), point at public sources, and agree with each other,
-- the Makefile's release version, the CHANGELOG and the LICENSE.
local support = require "support"
local BUILD = os.getenv("CR_BUILD") or "build"

local read = support.read_file

local function lines_of(command)
  local out = {}
  for line in select(2, support.shell(command)):gmatch("[^\n]+") do out[#out + 1] = line end
  return out
end

-- A rockspec's fields, read the way luarocks reads them (a Lua chunk run
-- in an empty environment).
local function rockspec(path)
  local env = {}
  local chunk = assert(loadfile(path, "t", env))
  chunk()
  return env
end

local SPECS = lines_of("ls rockspec/*.rockspec")
local CORE = { "rockspec/cache_resource-scm-1.rockspec" }
local REDIS = { "rockspec/cache_resource-redis-scm-1.rockspec" }
local RELEASES = {}
for _, path in ipairs(SPECS) do
  local name, version = path:match("^rockspec/(.-)%-(%d+%.%d+%.%d+%-%d+)%.rockspec$")
  if name then RELEASES[#RELEASES + 1] = { path = path, name = name, version = version } end
  if name == "cache_resource" then CORE[#CORE + 1] = path end
  if name == "cache_resource-redis" then REDIS[#REDIS + 1] = path end
end

-- The modules of the Redis rock (the store and its C part), which the core
-- rock leaves out.
local REDIS_MODULES = { ["cache_resource.redis"] = true, ["cache_resource.redis_resp"] = true }

local function lua_files()
  local files = lines_of("cd lua && find . -name '*.lua' | sort")
  for i, file in ipairs(files) do files[i] = file:sub(3) end
  return files
end

describe("packaging", function()
  it("has a scm rockspec and a versioned release rockspec for the core, the cqueues and the Redis rock", function()
    local names = {}
    for _, path in ipairs(SPECS) do names[path] = true end
    assert.is_true(names["rockspec/cache_resource-scm-1.rockspec"])
    assert.is_true(names["rockspec/cache_resource-cqueues-scm-1.rockspec"])
    assert.is_true(names["rockspec/cache_resource-redis-scm-1.rockspec"])
    local released = {}
    for _, r in ipairs(RELEASES) do released[r.name] = r.version end
    assert.is_string(released["cache_resource"])
    assert.equal(released["cache_resource"], released["cache_resource-cqueues"])
    assert.equal(released["cache_resource"], released["cache_resource-redis"])
  end)

  it("every rockspec is format 3.0, named after its package and version, for Lua 5.3 and 5.4", function()
    for _, path in ipairs(SPECS) do
      local r = rockspec(path)
      assert.equal("3.0", r.rockspec_format, path)
      assert.equal("rockspec/" .. r.package .. "-" .. r.version .. ".rockspec", path)
      assert.equal("lua >= 5.3, < 5.5", r.dependencies[1], path)
      assert.equal("MIT", r.description.license, path)
      assert.truthy(r.description.summary, path)
    end
  end)

  it("rockspecs name public sources: a git URL for scm, the release tag's archive otherwise", function()
    for _, path in ipairs(SPECS) do
      local text, r = read(path), rockspec(path)
      assert.falsy(text:find("file:", 1, true), path)
      assert.falsy(text:find("[\"']/"), path .. " names an absolute local path")
      local version = r.version:match("^(.-)%-%d+$")
      if version == "scm" then
        assert.equal("git+https://github.com/cache-resource/cache_resource.git", r.source.url, path)
      else
        assert.equal("https://github.com/cache-resource/cache_resource/archive/v" .. version .. ".tar.gz",
          r.source.url, path)
        assert.equal("cache_resource-" .. version, r.source.dir, path)
      end
    end
  end)

  it("the release rockspec of each rock is its scm rockspec but for version and source", function()
    for _, rel in ipairs(RELEASES) do
      local scm = rockspec("rockspec/" .. rel.name .. "-scm-1.rockspec")
      local r = rockspec(rel.path)
      local hint = rel.path .. " differs from the scm rockspec: make release-rockspecs"
      local fields = { "rockspec_format", "package", "description", "build", "external_dependencies", "test" }
      for _, field in ipairs(fields) do
        assert.same(scm[field], r[field], hint .. " (" .. field .. ")")
      end
      local version = rel.version:match("^(.-)%-%d+$")
      local pinned = {}
      for i, dep in ipairs(scm.dependencies) do
        pinned[i] = dep == "cache_resource" and "cache_resource == " .. version or dep
      end
      assert.same(pinned, r.dependencies, hint .. " (dependencies)")
    end
  end)

  it("the core rockspecs list every C source in src/", function()
    local sources = lines_of("ls src/*.c")
    assert.is_true(#sources >= 6)
    for _, path in ipairs(CORE) do
      local listed = rockspec(path).build.modules.cache_resource.sources
      table.sort(listed)
      assert.same(sources, listed, path)
    end
  end)

  it("the core rockspecs install every pure-Lua module in lua/ under its module name but the Redis rock's", function()
    local files = lua_files()
    assert.is_true(#files >= 1)
    for _, path in ipairs(CORE) do
      local modules = rockspec(path).build.modules
      local count, expected = 0, 0
      for name in pairs(modules) do
        assert.is_nil(REDIS_MODULES[name], path .. " installs " .. name .. ", a module of the Redis rock")
        if name ~= "cache_resource" then count = count + 1 end
      end
      for _, file in ipairs(files) do
        local module = file:sub(1, -5):gsub("/", ".")
        if not REDIS_MODULES[module] then
          expected = expected + 1
          assert.equal("lua/" .. file, modules[module], path .. " misses " .. file)
        end
      end
      assert.equal(expected, count, path .. " lists a Lua module that lua/ does not have")
    end
  end)

  it("the Redis rockspecs build the store and its C part (src/redis/) with hiredis, and need cqueues", function()
    local sources = lines_of("ls src/redis/*.c")
    assert.is_true(#sources >= 1)
    for _, path in ipairs(REDIS) do
      local r = rockspec(path)
      assert.equal("builtin", r.build.type, path)
      assert.equal("lua/cache_resource/redis.lua", r.build.modules["cache_resource.redis"], path)
      local c = r.build.modules["cache_resource.redis_resp"]
      local listed = c.sources
      table.sort(listed)
      assert.same(sources, listed, path)
      assert.same({ "hiredis" }, c.libraries, path)
      local count = 0
      for name in pairs(r.build.modules) do
        assert.is_true(REDIS_MODULES[name], path .. " installs " .. name)
        count = count + 1
      end
      assert.equal(2, count, path)
      assert.same({ HIREDIS = { header = "hiredis/hiredis.h", library = "hiredis" } }, r.external_dependencies, path)
      assert.equal("cqueues", r.dependencies[3], path)
      assert.truthy(r.dependencies[2]:match("^cache_resource"), path)
    end
  end)

  it("the core rockspecs install every script in bin/ as a command, cache-resource among them", function()
    local scripts = lines_of("ls bin")
    assert.truthy(read("bin/cache-resource"))
    for _, path in ipairs(CORE) do
      local bin = rockspec(path).build.install.bin
      local count = 0
      for _ in pairs(bin) do count = count + 1 end
      assert.equal(#scripts, count, path)
      for _, script in ipairs(scripts) do
        assert.equal("bin/" .. script, bin[script], path .. " does not install bin/" .. script)
        -- LuaRocks runs a script that loads as Lua with the rock's own Lua
        -- and the tree's modules on its paths, whatever its first line says
        assert.truthy(loadfile("bin/" .. script), script .. " is not a Lua script")
      end
    end
  end)

  it("the core needs no library but the xxHash header; the cqueues rock adds cqueues", function()
    for _, path in ipairs(CORE) do
      local r = rockspec(path)
      assert.same({ XXHASH = { header = "xxhash.h" } }, r.external_dependencies, path)
      assert.same({ "lua >= 5.3, < 5.5" }, r.dependencies, path)
      for _, m in pairs(r.build.modules) do
        if type(m) == "table" then
          assert.is_nil(m.libraries, path)
          assert.is_nil(m.libdirs, path)
        end
      end
    end
    for _, path in ipairs(SPECS) do
      if path:find("cache_resource-cqueues-", 1, true) then
        local r = rockspec(path)
        assert.equal("none", r.build.type, path)
        assert.equal("cqueues", r.dependencies[3], path)
        assert.truthy(r.dependencies[2]:match("^cache_resource"), path)
      end
    end
  end)

  it("the SQLite store's rockspecs (scm and release) build cache_resource.sqlite from src/sqlite/, with libsqlite3",
    function()
      local sources = lines_of("ls src/sqlite/*.c")
      assert.is_true(#sources >= 1)
      local store = { "rockspec/cache_resource-sqlite-scm-1.rockspec" }
      for _, rel in ipairs(RELEASES) do
        if rel.name == "cache_resource-sqlite" then store[#store + 1] = rel.path end
      end
      assert.equal(2, #store)
      for _, path in ipairs(store) do
        local r = rockspec(path)
        assert.same({ SQLITE = { header = "sqlite3.h", library = "sqlite3" } }, r.external_dependencies, path)
        assert.truthy(r.dependencies[2]:match("^cache_resource"), path)
        local m = r.build.modules["cache_resource.sqlite"]
        local listed = m.sources
        table.sort(listed)
        assert.same(sources, listed, path)
        assert.same({ "sqlite3" }, m.libraries, path)
        local count = 0
        for _ in pairs(r.build.modules) do count = count + 1 end
        assert.equal(1, count, path)
      end
    end)

  it("the built store module links libsqlite3, not liblua, and exports only its luaopen", function()
    local so = BUILD .. "/cache_resource/sqlite.so"
    assert.truthy(io.open(so), so .. " is not built")
    local needed = table.concat(lines_of("readelf -d " .. so .. " | grep NEEDED"), "\n")
    assert.truthy(needed:find("libsqlite3", 1, true), needed)
    assert.falsy(needed:find("liblua", 1, true), needed)
    local exported = lines_of("nm -D --defined-only " .. so .. " | awk '$2 == \"T\" { print $3 }'")
    assert.same({ "luaopen_cache_resource_sqlite" }, exported)
  end)

  it("the cqueues rock names every module of the core rock that requires cqueues", function()
    local count = 0
    for _, file in ipairs(lua_files()) do
      local module = file:sub(1, -5):gsub("/", ".")
      if read("lua/" .. file):find('require%s*%(?%s*["\']cqueues') and not REDIS_MODULES[module] then
        count = count + 1
        for _, path in ipairs(SPECS) do
          if path:find("cache_resource-cqueues-", 1, true) then
            local detailed = rockspec(path).description.detailed
            assert.truthy(detailed:find(module, 1, true), path .. " does not name " .. module)
          end
        end
      end
    end
    assert.is_true(count >= 1)
  end)

  it("the built module links neither libxxhash nor liblua and leaves no xxHash symbol undefined", function()
    local so = BUILD .. "/cache_resource.so"
    assert.truthy(io.open(so), so .. " is not built")
    local needed = table.concat(lines_of("readelf -d " .. so .. " | grep NEEDED"), "\n")
    assert.truthy(needed:find("libc", 1, true), "readelf printed no NEEDED entry")
    assert.falsy(needed:find("xxhash", 1, true), needed)
    assert.falsy(needed:find("liblua", 1, true), needed)
    local undefined = lines_of("nm -D --undefined-only " .. so)
    assert.is_true(#undefined > 0)
    for _, sym in ipairs(undefined) do
      assert.falsy(sym:find("XXH", 1, true), sym)
    end
  end)

  it("the Redis store's C part links hiredis but not liblua", function()
    local so = BUILD .. "/cache_resource/redis_resp.so"
    assert.truthy(io.open(so), so .. " is not built")
    local needed = table.concat(lines_of("readelf -d " .. so .. " | grep NEEDED"), "\n")
    assert.truthy(needed:find("libhiredis", 1, true), needed)
    assert.falsy(needed:find("liblua", 1, true), needed)
  end)

  it("make dist's version is the release rockspecs', the module's _VERSION, and has a CHANGELOG entry", function()
    local makefile = read("Makefile")
    local version = assert(makefile:match("\nVERSION%s*:=%s*(%S+)"))
    assert.equal(version, require("cache_resource")._VERSION)
    local rev = assert(makefile:match("\nROCKREV%s*:=%s*(%S+)"))
    for _, rel in ipairs(RELEASES) do
      assert.equal(version .. "-" .. rev, rel.version, rel.path)
    end
    local changelog = read("CHANGELOG.md")
    assert.truthy(changelog:find("\n## [" .. version .. "]", 1, true), "no CHANGELOG entry for " .. version)
  end)

  it("is MIT licensed by the cache_resource authors", function()
    local license = read("LICENSE")
    assert.truthy(license:find("^MIT License\n"))
    assert.truthy(license:find("Copyright (c) 2026 the cache_resource authors", 1, true))
    assert.truthy(license:find("THE SOFTWARE IS PROVIDED \"AS IS\"", 1, true))
  end)

  it("loads as the module cache_resource with a callable module table", function()
    local cr = require "cache_resource"
    assert.equal("table", type(cr))
    assert.equal("function", type(getmetatable(cr).__call))
    for _, name in ipairs({ "clear", "stats", "set_clock", "set_waiter", "set_session", "end_session" }) do
      assert.equal("function", type(cr[name]), name)
    end
  end)
end)
