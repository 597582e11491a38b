-- The SQLite store beyond what every store does (stores_spec.lua): where
-- its file is and how private, its format, expiry in the file, LRU bounds
-- across processes, several processes writing at once, and faults: a
-- writer killed mid-write, a damaged file, a directory it cannot write, a
-- full disk, finalizers that use the store while it copies a value out.
local support = require "support"
local entry = require "entry_bytes"
local sqlite = require "cache_resource.sqlite"
local luasql = require "luasql.sqlite3"

local NS, OTHER = ("5"):rep(32), ("6"):rep(32)
local function key(w, i) return ("%016x%016x"):format(w, i) end

-- The first column of the first row of `sql` on the file, through a
-- connection of its own (lua-sql-sqlite3).
local function query(path, sql)
  local env = luasql.sqlite3()
  local conn = assert(env:connect(path))
  local cur = assert(conn:execute(sql))
  local value = cur
  if type(cur) == "userdata" then
    value = cur:fetch()
    cur:close()
  end
  conn:close()
  env:close()
  return value
end

-- Opens the file at path expecting open's note, and checks that the store
-- is empty and works.
local function opens_emptied(path, note)
  local store, got = sqlite.open(path)
  assert.truthy(store, got)
  assert.equal(note, got)
  assert.is_nil((store:get(NS, key(0, 1))))
  assert.is_true(store:set(NS, key(0, 1), "after"))
  assert.equal("after", store:get(NS, key(0, 1)))
  store:close()
end

local function mode_of(path)
  local ok, out = support.shell("stat -c %a " .. support.shell_quote(path))
  assert(ok, out)
  return (out:gsub("%s+$", ""))
end

-- A child running as an unprivileged user when this suite runs as root
-- (for whom permissions do not apply).
local IS_ROOT = select(2, support.shell("id -u")):match("^0%s") ~= nil
local AS_USER = IS_ROOT and "setpriv --reuid=65534 --regid=65534 --clear-groups" or ""

describe("the SQLite store", function()
  local root, remove_root
  before_each(function() root, remove_root = support.temp_dir() end)
  after_each(function() remove_root() end)

  describe("its file", function()
    it("is created with its missing directories private (0700, file 0600), whatever the umask", function()
      for _, umask in ipairs({ "000", "022" }) do
        local path = root .. "/u" .. umask .. "/a/b/cache_data.sqlite3"
        local out, status = support.lua_child([[
          local store = assert(require("cache_resource.sqlite").open(arg[1]))
          assert(store:set(string.rep("5", 32), string.rep("0", 32), "v"))
          io.write("set")
        ]], { path }, "umask " .. umask .. ";")
        assert.equal(0, status, out)
        assert.equal("set", out)
        for _, dir in ipairs({ "/u" .. umask, "/u" .. umask .. "/a", "/u" .. umask .. "/a/b" }) do
          assert.equal("700", mode_of(root .. dir), dir)
        end
        assert.equal("600", mode_of(path))
      end
    end)

    it("gives its WAL files the file's mode, and leaves existing directories as they are", function()
      assert(os.execute("mkdir -m 0755 " .. root .. "/shared"))
      local path = root .. "/shared/cache_data.sqlite3"
      local store = assert(sqlite.open(path))
      assert.is_true(store:set(NS, key(0, 1), "v"))
      assert.equal("755", mode_of(root .. "/shared"))
      assert.equal("600", mode_of(path))
      assert.equal("600", mode_of(path .. "-wal"))
      assert.equal("600", mode_of(path .. "-shm"))
      store:close()
    end)

    it("is a WAL-mode database that records its format", function()
      local path = root .. "/cache_data.sqlite3"
      local store = assert(sqlite.open(path))
      assert.equal("wal", query(path, "PRAGMA journal_mode"))
      assert.equal(1, tonumber(query(path, "PRAGMA user_version")))
      assert.equal(0x43526463, tonumber(query(path, "PRAGMA application_id")))
      store:close()
    end)

    it("is named by tostring, and two stores on one file share its entries", function()
      local path = root .. "/x/cache_data.sqlite3"
      local a, b = assert(sqlite.open(path)), assert(sqlite.open(path))
      assert.equal(path, tostring(a))
      assert.is_true(a:set(NS, key(0, 1), "shared"))
      assert.equal("shared", b:get(NS, key(0, 1)))
      a:close()
      b:close()
    end)

    it("can be SQLite's private in-memory database, which makes no file", function()
      local store = assert(sqlite.open(":memory:"))
      assert.is_true(store:set(NS, key(0, 1), "in memory"))
      assert.equal("in memory", store:get(NS, key(0, 1)))
      assert.is_nil(io.open(":memory:"))
      store:close()
    end)

    it("by default is in CR_CACHE_DIR, else XDG_CACHE_HOME/cache_resource, else HOME/.cache/cache_resource", function()
      local cases = {
        { "CR_CACHE_DIR=/c/ XDG_CACHE_HOME=/x HOME=/h", "/c/cache_data.sqlite3" },
        { "CR_CACHE_DIR= XDG_CACHE_HOME=/x HOME=/h", "/x/cache_resource/cache_data.sqlite3" },
        { "-u CR_CACHE_DIR XDG_CACHE_HOME=relative HOME=/h", "/h/.cache/cache_resource/cache_data.sqlite3" },
        { "-u CR_CACHE_DIR -u XDG_CACHE_HOME HOME=/h", "/h/.cache/cache_resource/cache_data.sqlite3" },
        { "-u CR_CACHE_DIR -u XDG_CACHE_HOME -u HOME", "nil\tcache_resource.sqlite: no place for the store: "
          .. "set CR_CACHE_DIR (or HOME, or XDG_CACHE_HOME)" },
      }
      for _, c in ipairs(cases) do
        local out, status = support.lua_child([[
          local path, err = require("cache_resource.sqlite").default_path()
          io.write(path or "nil\t" .. err)
        ]], nil, "env " .. c[1])
        assert.equal(0, status, out)
        assert.equal(c[2], out, c[1])
      end
    end)

    it("open() without a path opens the default store", function()
      local out, status = support.lua_child([[
        local sqlite = require("cache_resource.sqlite")
        local store = assert(sqlite.open())
        assert(store:set(string.rep("5", 32), string.rep("0", 32), "default"))
        io.write(tostring(store) == sqlite.default_path() and "same" or "differs")
      ]], nil, "env CR_CACHE_DIR=" .. root .. "/default")
      assert.equal(0, status, out)
      assert.equal("same", out)
      assert.equal("default", query(root .. "/default/cache_data.sqlite3", "SELECT bytes FROM entries"))
    end)

    it("cannot be made where a directory would have to replace a file", function()
      assert(io.open(root .. "/plain", "w")):close()
      local store, err = sqlite.open(root .. "/plain/sub/cache_data.sqlite3")
      assert.is_nil(store)
      assert.equal("cache_resource.sqlite: cannot create the directory " .. root .. "/plain (Not a directory)", err)
    end)
  end)

  describe("arguments of the wrong type raise, naming them", function()
    local store
    before_each(function() store = assert(sqlite.open(root .. "/cache_data.sqlite3")) end)
    after_each(function() store:close() end)

    local cases = {
      { "open(path)", function() sqlite.open(1) end, "bad argument #1 to 'open' (string expected, got number)" },
      { "an empty path", function() sqlite.open("") end, "bad argument #1 to 'open' (the path is empty)" },
      { "a NUL in the path", function() sqlite.open("a\0b") end, "(the path contains a NUL byte)" },
      { "opts", function() sqlite.open("x", 5) end, "bad argument #2 to 'open' (table expected, got number)" },
      { "opts.timeout", function() sqlite.open("x", { timeout = -1 }) end, "(opts.timeout must be seconds from 0" },
      { "get's key", function() store:get(NS, 1) end, "bad argument #2 to 'get' (string expected, got number)" },
      { "set's bytes", function() store:set(NS, NS, {}) end, "bad argument #3 to 'set' (string expected, got table)" },
      { "a NaN ttl", function() store:set(NS, NS, "v", 0 / 0) end, "bad argument #4 to 'set' (the ttl is NaN)" },
      { "limits", function() store:set(NS, NS, "v", nil, 3) end, "bad argument #5 to 'set' (table expected" },
      { "max_entries 0", function() store:set(NS, NS, "v", nil, { max_entries = 0 }) end,
        "(limits.max_entries must be a number >= 1 (or nil))" },
      { "max_size as a string", function() store:set(NS, NS, "v", nil, { max_size = "1KB" }) end,
        "(limits.max_size must be a number >= 1 (or nil))" },
      { "clear's ns", function() store:clear(false) end, "bad argument #1 to 'clear' (string expected, got boolean)" },
      { "a method on something else", function() store.get({}, NS, NS) end,
        "bad argument #1 to 'get' (cache_resource.sqlite expected, got table)" },
    }
    for _, c in ipairs(cases) do
      it(c[1], function()
        local ok, err = pcall(c[2])
        assert.is_false(ok)
        assert.truthy(tostring(err):find(c[3], 1, true), err)
      end)
    end
  end)

  describe("its format", function()
    it("a store file of another format is emptied and used, with a note saying so", function()
      local path = root .. "/cache_data.sqlite3"
      local store = assert(sqlite.open(path))
      assert.is_true(store:set(NS, key(0, 1), "old format"))
      store:close()
      query(path, "PRAGMA user_version = 99")
      opens_emptied(path, "cache_resource.sqlite: " .. path .. " was a store of format 99; it has been emptied "
        .. "for format 1")
      assert.equal(1, tonumber(query(path, "PRAGMA user_version")))
    end)

    it("an SQLite database of another application is refused and left as it was", function()
      local path = root .. "/theirs.db"
      query(path, "CREATE TABLE accounts (name TEXT)")
      query(path, "INSERT INTO accounts VALUES ('kept')")
      local store, err = sqlite.open(path)
      assert.is_nil(store)
      assert.equal("cache_resource.sqlite: cannot open " .. path .. ": it is an SQLite database of another "
        .. "application (cache_resource changes nothing in it): choose another path", err)
      assert.equal("kept", query(path, "SELECT name FROM accounts"))
      assert.equal("delete", query(path, "PRAGMA journal_mode"))
    end)
  end)

  describe("expiry", function()
    it("expired rows leave the file through later writes", function()
      local path = root .. "/cache_data.sqlite3"
      local store = assert(sqlite.open(path))
      -- Why the count is read, not assumed to be 100: under valgrind a hundred writes can take
      -- longer than the ttl, and a write in the loop already sweeps the first ones out.
      for i = 1, 100 do assert.is_true(store:set(NS, key(1, i), "short-lived", 1)) end
      local written = support.now()
      for i = 1, 10 do assert.is_true(store:set(NS, key(2, i), "kept", 3600)) end
      support.sleep(math.max(0, written + 1.1 - support.now()))
      local expired = ("SELECT count(*) FROM entries WHERE expires <= %.3f"):format(support.now())
      local short_lived = tonumber(query(path, "SELECT count(*) FROM entries WHERE ns = '" .. NS .. "'")) - 10
      assert.is_true(short_lived > 0)
      assert.equal(short_lived, tonumber(query(path, expired)))
      for i = 1, 20 do assert.is_true(store:set(OTHER, key(3, i), "a write")) end
      assert.equal(0, tonumber(query(path, expired)))
      assert.equal(10, tonumber(query(path, "SELECT count(*) FROM entries WHERE ns = '" .. NS .. "'")))
      store:close()
    end)

    it("a ttl that already ran out removes the entry there and stores nothing", function()
      local store = assert(sqlite.open(root .. "/cache_data.sqlite3"))
      assert.is_true(store:set(NS, key(0, 1), "before"))
      assert.is_true(store:set(NS, key(0, 1), "after", 0))
      assert.is_nil((store:get(NS, key(0, 1))))
      assert.is_true(store:set(NS, key(0, 2), "never", -5))
      assert.is_nil((store:get(NS, key(0, 2))))
      assert.is_true(store:set(NS, key(0, 3), "forever", math.huge))
      assert.equal("forever", store:get(NS, key(0, 3)))
      store:close()
    end)
  end)

  describe("bounds", function()
    local function child_set(path, k)
      local out, status = support.lua_child(([[
        local store = assert(require("cache_resource.sqlite").open(arg[1]))
        assert(store:set(%q, %q, "from the child", nil, { max_entries = 3 }))
      ]]):format(NS, k), { path })
      assert.equal(0, status, out)
    end

    it("a read counts for another process's eviction once the reader wrote", function()
      local path = root .. "/cache_data.sqlite3"
      local store = assert(sqlite.open(path))
      for i = 1, 3 do assert.is_true(store:set(NS, key(0, i), "v" .. i, nil, { max_entries = 3 })) end
      assert.equal("v1", store:get(NS, key(0, 1)))
      assert.is_true(store:set(OTHER, key(0, 9), "any write carries the reads"))
      child_set(path, key(0, 4))
      assert.is_nil((store:get(NS, key(0, 2))))
      assert.equal("v1", store:get(NS, key(0, 1)))
      store:close()
    end)

    it("a read counts once the reader closed the store", function()
      local path = root .. "/cache_data.sqlite3"
      local store = assert(sqlite.open(path))
      for i = 1, 3 do assert.is_true(store:set(NS, key(0, i), "v" .. i, nil, { max_entries = 3 })) end
      assert.equal("v1", store:get(NS, key(0, 1)))
      store:close()
      child_set(path, key(0, 4))
      store = assert(sqlite.open(path))
      assert.is_nil((store:get(NS, key(0, 2))))
      assert.equal("v1", store:get(NS, key(0, 1)))
      store:close()
    end)

    it("reads of more entries than it remembers between writes all count", function()
      local store = assert(sqlite.open(root .. "/cache_data.sqlite3"))
      local limits = { max_entries = 1500 }
      for i = 1, 1500 do assert.is_true(store:set(NS, key(0, i), "v", nil, limits)) end
      for i = 1, 1200 do assert.equal("v", store:get(NS, key(0, i))) end
      assert.is_true(store:set(NS, key(0, 1501), "new", nil, limits))
      assert.is_nil((store:get(NS, key(0, 1201)))) -- the one set longest ago and not read since
      assert.equal("v", store:get(NS, key(0, 1)))
      assert.equal("v", store:get(NS, key(0, 1202)))
      store:close()
    end)

    it("replacing, deleting and clearing entries keep the count right", function()
      local store = assert(sqlite.open(root .. "/cache_data.sqlite3"))
      local limits = { max_entries = 2 }
      assert.is_true(store:set(NS, key(0, 1), "a", nil, limits))
      for i = 1, 5 do assert.is_true(store:set(NS, key(0, 2), "b" .. i, nil, limits)) end
      assert.equal("a", store:get(NS, key(0, 1)))
      assert.is_true(store:delete(NS, key(0, 1)))
      assert.is_true(store:set(NS, key(0, 3), "c", nil, limits))
      assert.equal("b5", store:get(NS, key(0, 2)))
      assert.equal("c", store:get(NS, key(0, 3)))
      assert.is_true(store:clear(NS))
      assert.is_true(store:set(NS, key(0, 4), "d", nil, limits))
      assert.is_true(store:set(NS, key(0, 5), "e", nil, limits))
      assert.equal("d", store:get(NS, key(0, 4)))
      assert.equal("e", store:get(NS, key(0, 5)))
      store:close()
    end)

    it("only entries set with limits are counted and evicted", function()
      local store = assert(sqlite.open(root .. "/cache_data.sqlite3"))
      assert.is_true(store:set(NS, key(0, 1), "unbounded"))
      for i = 2, 4 do assert.is_true(store:set(NS, key(0, i), "bounded", nil, { max_entries = 2 })) end
      assert.equal("unbounded", store:get(NS, key(0, 1)))
      assert.is_nil((store:get(NS, key(0, 2))))
      store:close()
    end)
  end)

  describe("with other writers", function()
    it("a write waits for another process's transaction, within the timeout", function()
      local path = root .. "/cache_data.sqlite3"
      local store = assert(sqlite.open(path))
      local pid, wait = support.spawn_lua([[
        local env = require("luasql.sqlite3").sqlite3()
        local conn = assert(env:connect(arg[1]))
        assert(conn:execute("BEGIN IMMEDIATE"))
        assert(io.open(arg[2], "w")):close()
        require("socket").sleep(0.3)
        assert(conn:execute("COMMIT"))
      ]], { path, root .. "/locked" })
      assert.is_number(pid)
      local t0 = support.now()
      while not io.open(root .. "/locked") and support.now() - t0 < 5 do support.sleep(0.01) end
      t0 = support.now()
      assert.is_nil((store:get(NS, key(0, 1)))) -- reads do not wait
      assert.is_true(support.now() - t0 < 0.2)
      assert.is_true(store:set(NS, key(0, 1), "after the other"))
      assert.is_true(support.now() - t0 > 0.1)
      wait()
      assert.equal("after the other", store:get(NS, key(0, 1)))
      store:close()
    end)

    it("four processes x 1,000 keys at once: every value read is exact, no call fails", function()
      local path = root .. "/cache_data.sqlite3"
      assert(sqlite.open(path)):close()
      local outs, statuses = support.lua_children(([[
        local entry = require "entry_bytes"
        local me, path = tonumber(arg[1]), %q
        local store = assert(require("cache_resource.sqlite").open(path))
        local ns = %q
        local function key(w, i) return ("%%016x%%016x"):format(w, i) end
        local seed = me * 7919
        local function rand(n) seed = (seed * 1103515245 + 12345) %% 2147483648; return seed %% n end
        local errors, bad, reads = 0, 0, 0
        local function check(k, v, err)
          if v then
            reads = reads + 1
            local ok, why = entry.check(k, v)
            if not ok then bad = bad + 1; print("bad " .. k .. ": " .. why) end
          elseif err then
            errors = errors + 1; print("get: " .. err)
          end
        end
        for i = 1, 1000 do
          local k = key(me, i)
          local ok, err = store:set(ns, k, entry.make(k, me, i, i %% 50 == 0 and 100000 or rand(4000)))
          if not ok then errors = errors + 1; print("set: " .. tostring(err)) end
          if i %% 10 == 0 then -- keys every process writes: the last write wins, whole
            local hot = key(0, i %% 7)
            ok, err = store:set(ns, hot, entry.make(hot, me, i, rand(20000)))
            if not ok then errors = errors + 1; print("set: " .. tostring(err)) end
            check(hot, store:get(ns, hot))
          end
          local other = key(rand(4) + 1, rand(i) + 1)
          check(other, store:get(ns, other))
        end
        print(("done errors %%d bad %%d reads %%d"):format(errors, bad, reads))
      ]]):format(path, NS), 4)
      for i = 1, 4 do
        assert.equal(0, statuses[i], outs[i])
        assert.matches("^done errors 0 bad 0 reads %d+\n$", outs[i])
      end
      local store = assert(sqlite.open(path))
      for w = 1, 4 do
        for i = 1, 1000 do
          local k = key(w, i)
          assert.is_true(entry.check(k, store:get(NS, k)), k)
        end
      end
      for h = 0, 6 do
        local ok, writer = entry.check(key(0, h), store:get(NS, key(0, h)))
        assert.is_true(ok)
        assert.truthy(tonumber(writer) >= 1 and tonumber(writer) <= 4)
      end
      store:close()
      assert.equal("ok", query(path, "PRAGMA integrity_check"))
    end)
  end)

  describe("faults", function()
    it("a writer killed with SIGKILL mid-write, 20 times: the store stays readable, every entry whole", function()
      local path = root .. "/cache_data.sqlite3"
      local reader = assert(sqlite.open(path))
      local seen = 0
      math.randomseed(os.time())
      for round = 1, 20 do
        local pid, wait = support.spawn_lua(([[
          local entry = require "entry_bytes"
          local store = assert(require("cache_resource.sqlite").open(arg[1]))
          for i = 1, math.huge do
            local k = ("%%016x%%016x"):format(0, i %% 20)
            store:set(%q, k, entry.make(k, arg[2], i, 50000 + (i * 7919) %% 400000))
          end
        ]]):format(NS), { path, round })
        support.sleep(0.02 + math.random() * 0.1)
        assert(os.execute("kill -KILL " .. pid))
        wait()
        for i = 0, 19 do
          local k = key(0, i)
          local v, err = reader:get(NS, k)
          assert.is_nil(err)
          if v then
            seen = seen + 1
            assert.is_true(entry.check(k, v), k)
          end
        end
      end
      assert.is_true(seen > 0)
      reader:close()
      assert.equal("ok", query(path, "PRAGMA integrity_check"))
    end)

    local function damage(path, how)
      if how == "garbage" then
        assert(os.execute("head -c 300000 /dev/urandom > " .. path))
      else
        assert(os.execute("truncate -s 40000 " .. path))
      end
    end

    local function fill(store, n)
      for i = 1, n do assert.is_true(store:set(NS, key(0, i), entry.make(key(0, i), "w", i, 5000))) end
    end

    for _, how in ipairs({ "garbage", "truncated" }) do
      it("a file " .. (how == "garbage" and "overwritten with garbage" or "truncated")
          .. ": the call that meets it fails with a message, the file is emptied, the store works", function()
        local path = root .. "/cache_data.sqlite3"
        local store = assert(sqlite.open(path))
        fill(store, 100)
        store:close() -- the last connection: everything is in the file, the WAL is gone
        store = assert(sqlite.open(path))
        damage(path, how)
        local v, err = store:get(NS, key(0, 50))
        assert.is_nil(v)
        local why = err:match("^cache_resource%.sqlite: cannot read " .. path:gsub("%p", "%%%0")
          .. ": (.-); the file was damaged and has been emptied %(the store works again%)$")
        assert.truthy(why == "file is not a database" or why == "database disk image is malformed", err)
        assert.is_nil((store:get(NS, key(0, 50))))
        assert.is_true(store:set(NS, key(0, 1), "after"))
        assert.equal("after", store:get(NS, key(0, 1)))
        local out, status = support.lua_child(([[
          local store = assert(require("cache_resource.sqlite").open(arg[1]))
          io.write(store:get(%q, %q))
        ]]):format(NS, key(0, 1)), { path })
        assert.equal(0, status, out)
        assert.equal("after", out)
        store:close()
        assert.equal("ok", query(path, "PRAGMA integrity_check"))
      end)
    end

    it("a file damaged before open: open empties it and says so", function()
      local path = root .. "/cache_data.sqlite3"
      local store = assert(sqlite.open(path))
      fill(store, 20)
      store:close()
      damage(path, "garbage")
      opens_emptied(path, "cache_resource.sqlite: " .. path .. " was damaged (file is not a database); it has been "
        .. "emptied")
    end)

    it("a file overwritten under a store in use: calls return exact bytes or nil (and a message), then work", function()
      local path = root .. "/cache_data.sqlite3"
      local store = assert(sqlite.open(path))
      fill(store, 300) -- part of it in the WAL, which SQLite reads before the file
      damage(path, "garbage")
      local failures = 0
      for i = 1, 300 do
        local ok, v, err = pcall(store.get, store, NS, key(0, i))
        assert.is_true(ok, v)
        if v then assert.is_true(entry.check(key(0, i), v)) elseif err then failures = failures + 1 end
        assert.is_true(failures <= 1)
      end
      local ok, err = store:set(NS, key(1, 1), "after")
      if not ok then
        assert.is_string(err)
        assert.is_true(store:set(NS, key(1, 1), "after"))
      end
      assert.equal("after", store:get(NS, key(1, 1)))
      local other = assert(sqlite.open(path))
      assert.equal("after", other:get(NS, key(1, 1)))
      other:close()
      store:close()
    end)

    it("a directory it cannot write: open returns nil and a message naming the file", function()
      local dir = root .. "/locked"
      assert(os.execute("mkdir -m 0755 " .. dir))
      if not IS_ROOT then assert(os.execute("chmod 0555 " .. dir)) end
      local out, status = support.lua_child([[
        local sqlite = require "cache_resource.sqlite"
        print(sqlite.open(arg[1] .. "/cache_data.sqlite3"))
        print(sqlite.open(arg[1] .. "/sub/cache_data.sqlite3"))
      ]], { dir }, AS_USER)
      assert.equal(0, status, out)
      assert.equal(("nil\tcache_resource.sqlite: cannot create %s/cache_data.sqlite3 (Permission denied)\n"
        .. "nil\tcache_resource.sqlite: cannot create the directory %s/sub (Permission denied)\n"):format(dir, dir),
        out)
    end)

    it("a file it cannot write: reads work, set returns nil and a message", function()
      local dir = root .. "/shared"
      assert(os.execute("mkdir -m 0777 " .. dir))
      local path = dir .. "/cache_data.sqlite3"
      local store = assert(sqlite.open(path))
      assert.is_true(store:set(NS, key(0, 1), "readable"))
      store:close()
      assert(os.execute("chmod 0444 " .. path))
      local out, status = support.lua_child(([[
        local store = assert(require("cache_resource.sqlite").open(arg[1]))
        print(store:get(%q, %q))
        print(store:set(%q, %q, "v"))
        print(store:clear())
      ]]):format(NS, key(0, 1), NS, key(0, 2)), { path }, AS_USER)
      assert.equal(0, status, out)
      local hint = (" (a store needs its file and its directory writable: SQLite keeps the files %s-wal and %s-shm "
        .. "beside it)"):format(path, path)
      local fail = "nil\tcache_resource.sqlite: cannot write to " .. path .. ": attempt to write a readonly database"
        .. hint .. "\n"
      assert.equal("readable\n" .. fail .. fail, out)
    end)

    it("a full disk (a file size limit): set returns nil and a message, the store stays readable", function()
      local path = root .. "/cache_data.sqlite3"
      assert(sqlite.open(path)):close()
      -- 4096 blocks: 2 MB (dash) or 4 MB (bash); SIGXFSZ ignored, so writes fail with EFBIG
      local out, status = support.lua_child(([[
        local entry = require "entry_bytes"
        local store = assert(require("cache_resource.sqlite").open(arg[1]))
        local ok_count, failed, last = 0, 0, nil
        for i = 1, 40 do
          local k = ("%%016x%%016x"):format(0, i)
          local ok, err = store:set(%q, k, entry.make(k, "w", i, 256 * 1024))
          if ok then ok_count = ok_count + 1 else failed = failed + 1; last = err end
        end
        print("stored " .. ok_count .. " failed " .. failed)
        print(last)
      ]]):format(NS), { path }, "ulimit -f 4096; trap '' XFSZ;")
      assert.equal(0, status, out)
      local stored, failed = out:match("^stored (%d+) failed (%d+)\n")
      assert.truthy(tonumber(failed) > 0, out)
      assert.truthy(tonumber(stored) > 0, out)
      assert.matches("\ncache_resource.sqlite: cannot write to " .. path:gsub("%p", "%%%0") .. ": ", out)
      local store = assert(sqlite.open(path))
      local found = 0
      for i = 1, 40 do
        local v, err = store:get(NS, key(0, i))
        assert.is_nil(err)
        if v then
          found = found + 1
          assert.is_true(entry.check(key(0, i), v))
        end
      end
      assert.is_true(found > 0)
      assert.is_true(store:set(NS, key(1, 1), "after"))
      store:close()
      assert.equal("ok", query(path, "PRAGMA integrity_check"))
    end)
  end)

  describe("finalizers", function()
    -- Garbage with finalizers that call the store, made while get copies
    -- large values out (copying allocates, and the collector may run the
    -- finalizers right there). Returns, per get, its key number and
    -- whether it returned the exact value (or else its message), and how
    -- many finalizers ran inside a get. It runs on until `enough(results)`
    -- holds, if given.
    local function churn(store, on_gc, enough)
      local big = {}
      for i = 1, 4 do
        big[i] = entry.make(key(0, i), "w", i, 100000)
        assert.is_true(store:set(NS, key(0, i), big[i]))
      end
      collectgarbage("collect")
      support.gc_pace(10, 400)
      collectgarbage("step", 0) -- from now on: the debt the earlier pace left would delay the steps
      local inside, during = false, 0
      local results = {}
      -- at least 120 gets, and on until finalizers ran inside one: when a
      -- cycle ends depends on the heap the earlier specs left
      local now -- the round running: finalizers act on it, whenever they run
      for round = 1, 4000 do
        if round > 120 and during > 0 and (not enough or enough(results)) then break end
        now = round
        for _ = 1, 3 do
          setmetatable({}, { __gc = function()
            if inside then during = during + 1 end
            on_gc(now)
          end })
        end
        local i = round % 4 + 1
        inside = true
        local v, err = store:get(NS, key(0, i))
        inside = false
        results[round] = { exact = v == big[i], got = v ~= nil, err = err }
      end
      collectgarbage("collect")
      support.gc_pace(200, 100)
      return results, during
    end

    it("a finalizer that reads and writes the store while get copies a value out", function()
      local store = assert(sqlite.open(root .. "/cache_data.sqlite3"))
      assert.is_true(store:set(OTHER, key(1, 0), "small"))
      local wrote, last = 0, nil
      local results, during = churn(store, function(round)
        assert(store:get(OTHER, key(1, 0)) == "small")
        if store:set(OTHER, key(1, round), "from a finalizer", nil, { max_entries = 5 }) then
          wrote, last = wrote + 1, round
        end
      end)
      assert.is_true(during > 0, "no finalizer ran inside get")
      for round, r in ipairs(results) do assert.is_true(r.exact, "round " .. round) end
      assert.is_true(wrote > 0)
      assert.equal("from a finalizer", store:get(OTHER, key(1, last)))
      store:close()
    end)

    it("a finalizer that closes the store while get copies a value out", function()
      local store = assert(sqlite.open(root .. "/cache_data.sqlite3"))
      local results, during = churn(store, function(round)
        if round > 40 then store:close() end
      end, function(results) return not results[#results].got end)
      assert.is_true(during > 0, "no finalizer ran inside get")
      local closed = 0
      for round, r in ipairs(results) do
        if r.got then assert.is_true(r.exact, "round " .. round) else
          closed = closed + 1
          assert.matches("is closed$", r.err)
        end
      end
      assert.is_true(closed > 0)
    end)
  end)

  describe("closing", function()
    it("close is idempotent; calls after it return nil and a message", function()
      local path = root .. "/cache_data.sqlite3"
      local store = assert(sqlite.open(path))
      assert.is_true(store:close())
      assert.is_true(store:close())
      local msg = "cache_resource.sqlite: the store " .. path .. " is closed"
      for _, call in ipairs({ { "get", NS, NS }, { "set", NS, NS, "v" }, { "delete", NS, NS }, { "clear" },
                              { "generation", NS } }) do
        local v, err = store[call[1]](store, table.unpack(call, 2))
        assert.is_nil(v)
        assert.equal(msg, err)
      end
      assert.equal(path, tostring(store))
    end)

    support.it_needs("<close>", "a <close> variable closes the store at the end of its scope", function()
      local path = root .. "/cache_data.sqlite3"
      local escaped = assert(load([[
        local sqlite = ...
        local store <close> = assert(sqlite.open(select(2, ...)))
        assert(store:set(string.rep("5", 32), string.rep("0", 32), "v"))
        return store
      ]]))(sqlite, path)
      local v, err = escaped:get(NS, NS)
      assert.is_nil(v)
      assert.matches("is closed$", err)
    end)
  end)
end)
