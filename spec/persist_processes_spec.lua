-- cache_data with persist across processes on one machine (the SQLite
-- store): restarts, several processes at once, and a store file that is
-- damaged, cannot be written or fills the disk. Every process here is a
-- child running one script from one path, so its functions have the same
-- identity in every run, as an app's have.
local support = require "support"
local ps = require "persist_support"

-- A child: wraps `load` (the values of persist_support, a UI row shown by
-- a named replayable) with persist = true and ttl = 100, calls it for keys
-- 1..N, and emits what it saw. arg: mode, the clock (wall and module: set
-- with set_clock), N.
local CHILD = [[
local cr = require "cache_resource"
local ps = require "persist_support"
local cache_data = cr.data
local mode, now, n = arg[1], tonumber(arg[2]), tonumber(arg[3] or 5)
local warnings = {}
warn = function(...) warnings[#warnings + 1] = table.concat({ ... }) end
if now then cr.set_clock(function() return now end) end
local shown = {}
local row = cr.replayable(function(s) shown[#shown + 1] = s end, "spec.row")
local extra
if mode == "extra" then extra = cr.replayable(function(s) shown[#shown + 1] = "extra " .. s end, "spec.extra") end
local runs = 0
local size = tonumber(os.getenv("SPEC_VALUE_SIZE") or 0)
local load
if mode == "edited" then
  load = cache_data(function(i)
    runs = runs + 1
    row("row " .. i)
    return ps.value(i)
  end, { persist = true, ttl = 100 })
else
  load = cache_data(function(i)
    runs = runs + 1
    row("row " .. i)
    if extra then extra(i) end
    local t, two, three = ps.value(i)
    if size > 0 then t.pad = ("p"):rep(size) end
    return t, two, three
  end, { persist = true, ttl = 100 })
end
local exact = true
for i = 1, n do
  local want = table.pack(ps.value(i))
  if size > 0 then want[1].pad = ("p"):rep(size) end
  if not ps.same(want, table.pack(load(i))) then exact = false end
end
local first_rows = table.concat(shown, ",")
load(1) -- a hit in memory: replays again
local s = cr.stats(load)
ps.emit({ runs = runs, exact = exact, rows = first_rows, rows_after = table.concat(shown, ","),
  misses = s.misses, hits = s.hits, store_hits = s.store_hits, store_writes = s.store_writes,
  store_errors = s.store_errors, warnings = #warnings, warning = warnings[1] or "",
  persist = tostring(s.persist) })
]]

local IS_ROOT = select(2, support.shell("id -u")):match("^0%s") ~= nil
local AS_USER = IS_ROOT and "setpriv --reuid=65534 --regid=65534 --clear-groups " or ""

describe("cache_data with persist = true, across processes", function()
  local root, remove_root, script
  before_each(function()
    root, remove_root = support.temp_dir()
    assert(os.execute("chmod 0755 " .. root))
    script = root .. "/app.lua"
  end)
  after_each(function() remove_root() end)

  -- Runs the child in `dir` (its CR_CACHE_DIR) and returns its results.
  local function child(dir, mode, now, n, prefix)
    local out, status = support.lua_child(CHILD, { mode, now or "", n or 5 },
      (prefix or "") .. "env CR_CACHE_DIR=" .. support.shell_quote(dir) .. " ", script)
    assert.equal(0, status, out)
    return ps.results(out), out
  end

  local function rows(n, prefix)
    local t = {}
    for i = 1, n do t[i] = (prefix or "") .. "row " .. i end
    return table.concat(t, ",")
  end

  describe("a restart", function()
    it("finds what the last run stored: store hits, exact copies, the named replayables replayed", function()
      local dir = root .. "/cache"
      local first = child(dir, "plain", 1000)
      assert.same({ 5, 5, 5, 0, 0 }, { first.runs, first.misses, first.store_writes, first.store_hits,
        first.store_errors })
      assert.equal(dir .. "/cache_data.sqlite3", first.persist)
      local second = child(dir, "plain", 1050)
      assert.is_true(second.exact)
      assert.same({ 0, 0, 5, 0, 0 }, { second.runs, second.misses, second.store_hits, second.store_writes,
        second.store_errors })
      assert.equal(rows(5), second.rows) -- replayed from the store
      assert.equal(rows(5) .. ",row 1", second.rows_after) -- and from memory
      assert.equal(1, second.hits)
      assert.equal(0, second.warnings)
    end)

    it("keeps ttl in wall-clock time: an entry past it is computed again", function()
      local dir = root .. "/cache"
      child(dir, "plain", 1000)
      local late = child(dir, "plain", 1100.5)
      assert.same({ 5, 0, 5 }, { late.runs, late.store_hits, late.store_writes })
      assert.is_true(late.exact)
    end)

    it("does not give an edited function the entries of the old one", function()
      local dir = root .. "/cache"
      child(dir, "plain", 1000)
      local edited = child(dir, "edited", 1010)
      assert.same({ 5, 0 }, { edited.runs, edited.store_hits })
    end)

    it("is a miss for an entry naming a replayable this run does not have", function()
      local dir = root .. "/cache"
      local writer = child(dir, "extra", 1000)
      assert.equal(5, writer.store_writes)
      local reader = child(dir, "plain", 1010)
      assert.same({ 5, 0, 0 }, { reader.runs, reader.store_hits, reader.store_errors })
      assert.is_true(reader.exact)
    end)
  end)

  describe("a damaged store file", function()
    local function damage(path, how)
      local f = assert(io.open(path, "r+b"))
      local size = f:seek("end")
      if how == "truncated" then
        f:close()
        assert(os.execute(("truncate -s %d %s"):format(size // 3, support.shell_quote(path))))
        return
      end
      f:seek("set", 0)
      local junk = {}
      for i = 1, size do junk[i] = string.char((i * 7919 + 13) % 256) end
      f:write(table.concat(junk))
      f:close()
    end

    for _, how in ipairs({ "truncated", "overwritten with garbage" }) do
      it(how .. ": misses, store_errors, one warn(), exact values, and the store works again", function()
        local dir = root .. "/cache"
        child(dir, "plain", 1000, 20)
        damage(dir .. "/cache_data.sqlite3", how == "truncated" and how or "garbage")
        local after = child(dir, "plain", 1010, 20)
        assert.is_true(after.exact)
        assert.is_true(after.runs > 0)
        assert.is_true(after.store_errors >= 1)
        assert.equal(1, after.warnings, after.warning)
        assert.matches(dir .. "/cache_data.sqlite3", after.warning, 1, true)
        local again = child(dir, "plain", 1020, 20)
        assert.same({ 0, 20, 0 }, { again.runs, again.store_hits, again.warnings })
      end)
    end
  end)

  describe("a store it cannot use", function()
    it("a directory it cannot write: memory only, one warn(), no error", function()
      local dir = root .. "/locked"
      assert(os.execute("mkdir -m 0555 " .. dir))
      local got = child(dir, "plain", 1000, 5, AS_USER)
      assert.is_true(got.exact)
      assert.same({ 5, 0, 1 }, { got.runs, got.store_writes, got.warnings })
      assert.matches("cache_data: the default store " .. dir, got.warning, 1, true)
      assert.matches("memory only", got.warning, 1, true)
      assert.equal(1, got.hits)
    end)

    it("no SQLite store module, or no directory for the store: memory only, one warn(), no error", function()
      local cases = {
        { "package.preload['cache_resource.sqlite'] = function() error('not here') end", "env ",
          "the module cache_resource.sqlite is not installed" },
        { "", "env -u CR_CACHE_DIR -u XDG_CACHE_HOME -u HOME ", "no directory for the default store" },
      }
      for _, case in ipairs(cases) do
        local out, status = support.lua_child(case[1] .. "\n" .. CHILD, { "plain", 1000, 5 }, case[2], script)
        assert.equal(0, status, out)
        local got = ps.results(out)
        assert.is_true(got.exact)
        assert.same({ 5, 0, 1, 1 }, { got.runs, got.store_writes, got.warnings, got.store_errors })
        assert.matches(case[3], got.warning, 1, true)
      end
    end)

    it("a full disk (a file size limit): memory only, one warn(), no error", function()
      local dir = root .. "/cache"
      -- 2 MB (dash's ulimit counts 512-byte blocks) or 4 MB (bash); values of 256 KB
      local got = child(dir, "plain", 1000, 30, "ulimit -f 4096; trap '' XFSZ; SPEC_VALUE_SIZE=262144 ")
      assert.is_true(got.exact)
      assert.equal(30, got.runs)
      assert.is_true(got.store_writes < 30)
      assert.is_true(got.store_errors >= 1)
      assert.equal(1, got.warnings, got.warning)
      assert.matches("(set for ", got.warning, 1, true)
    end)
  end)

  describe("four processes on one store at once", function()
    it("1,000 keys each, in different orders: every value read is exact", function()
      local path = root .. "/shared/cache_data.sqlite3"
      local code = ([[
        local cr = require "cache_resource"
        local ps = require "persist_support"
        local store = assert(require("cache_resource.sqlite").open(%q))
        local me = tonumber(arg[1])
        local f = cr.data(function(i) return ps.value(i) end, { persist = store })
        local bad = 0
        for step = 0, 999 do
          local i = (step * 7 + me * 250) %% 1000 + 1
          if not ps.same(table.pack(ps.value(i)), table.pack(f(i))) then bad = bad + 1 end
        end
        local s = cr.stats(f)
        ps.emit({ bad = bad, misses = s.misses, store_hits = s.store_hits, store_errors = s.store_errors })
      ]]):format(path)
      local outs, statuses = support.lua_children(code, 4, root .. "/proc.lua")
      local found = 0
      for i = 1, 4 do
        assert.equal(0, statuses[i], outs[i])
        local r = ps.results(outs[i])
        assert.equal(0, r.bad)
        assert.equal(0, r.store_errors)
        assert.equal(1000, r.misses + r.store_hits)
        found = found + r.store_hits
      end
      assert.is_true(found > 0, "no process found an entry another stored")
    end)

    it("two processes missing the same keys at once both finish with exact values", function()
      local path = root .. "/shared/cache_data.sqlite3"
      local code = ps.racing_children(("require('cache_resource.sqlite').open(%q)"):format(path), root, 200, 2)
      local outs, statuses = support.lua_children(code, 2, root .. "/proc.lua")
      ps.check_race(assert, outs, statuses, 200)
    end)

    it("a clear in one process reaches the others within a second", function()
      local path = root .. "/shared/cache_data.sqlite3"
      support.write_file(root .. "/count", "3")
      local code = ps.clear_children(("require('cache_resource.sqlite').open(%q)"):format(path), root)
      local outs, statuses = support.lua_children(code, 3, root .. "/proc.lua")
      local slack = (os.getenv("LD_PRELOAD") or ""):find("vgpreload", 1, true) and 5 or 0.5
      for i = 2, 3 do
        assert.equal(0, statuses[i], outs[i])
        local r = ps.results(outs[i])
        assert.equal("computed by 1 #1", r.first, outs[i])
        assert.is_true(r.store_hits >= 1) -- the first read, and maybe the other's recompute
        assert.matches("^computed by [23] #1$", r.after) -- one of them computed it again
        assert.is_true(r.delay <= 1 + slack, "the clear took " .. r.delay .. " s to arrive")
      end
    end)
  end)
end)
