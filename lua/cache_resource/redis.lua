--- cache_resource.redis: a store on a Redis server, shared by every process
-- and machine that uses the server.
--
--     local redis = require "cache_resource.redis"
--     local store = redis.connect { host = "10.0.0.5", password = os.getenv("REDIS_PASSWORD") }
--     local load_rows = cache_data(read_csv, { ttl = "1h", persist = store })
--
-- A store has the five methods every store has (`get`, `set`, `delete`,
-- `clear`, `generation`; `tostring(store)` is "redis://host:port/db").
-- Inside a cqueues coroutine its I/O yields to the event loop, so a slow
-- server never stalls the other coroutines; elsewhere a call blocks for at
-- most `timeout` seconds. Failures at run time (the server down, slower than
-- `timeout`, answering errors, refusing the password) are returned as
-- `nil, message, kind` and never raised; while the server is unreachable a
-- connection is tried at most once a second and calls in between fail at
-- once. See docs/redis.md.
--
-- The layout, under the key prefix P (the `prefix` option):
--
--     P "format"           string  the layout version: "1"
--     P "gen"              integer the global generation, INCR by clear(nil)
--     P "gen:" ns          integer the generation of ns, INCR by clear(ns)
--     P "e:" ns ":" key    string  an entry: tag bytes (SET ... PX ttl, or no expiry)
--     P "idx:" ns          zset    the keys of ns's entries, scored by their expiry
--                                  (seconds since the epoch; +inf without a ttl)
--     P "ns"               set     every ns with an index
--
--     tag = "CR1 " counter(P "gen:" ns) " " counter(P "gen") "\n"     46 bytes
--     counter(k) = the decimal value of k in 20 digits, zeros in front; 0 when k
--                  does not exist
--
-- An entry is visible only while its tag names the current counters: `get`
-- reads both counters and the entry with one MGET (one atomic command), so
-- one INCR hides every older entry from every reader at once. The tag has
-- one size, so the reply hands it over apart from the bytes (no copy). The index and
-- the set of namespaces only let a clear remove what it hid, so Redis does
-- not keep it; no command scans the key space. A value without a tag of
-- this layout (another layout version, another program) is never returned.
-- @module cache_resource.redis
local resp = require "cache_resource.redis_resp"
local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local condition = require "cqueues.condition"
local errno = require "cqueues.errno"

local monotime, poll, running = cqueues.monotime, cqueues.poll, cqueues.running
local EAGAIN = errno.EAGAIN
local unpack = table.unpack

local M = {}

local FORMAT = "1"
local TAG = "CR" .. FORMAT .. " "
local TAG_SIZE = #TAG + 20 + 1 + 20 + 1
local RETRY = 1 -- seconds between connection attempts while the server is unreachable
-- Bytes a connection buffers for one reply at most: Redis's default limit
-- on a string (proto-max-bulk-len, 512 MB) and room for the rest of a reply.
local MAX_REPLY = (512 + 1) * 1024 * 1024
local READ_SIZE = 256 * 1024 -- bytes asked of the socket at a time
local UNLINK_KEYS = 256      -- keys per UNLINK of a clear
local CLEAR_COMMANDS = 64    -- commands per exchange of a clear
-- A call still holding the connection this long after its own deadline is
-- stuck (its coroutine is not resumed): the next caller takes it over.
local STUCK = 0.1

local Store = {}
Store.__index = Store

-- ---------------------------------------------------------- failures

-- The failure of a call: nil, "redis://...: what happened", kind.
local function failure(self, kind, why)
  return nil, self.name .. ": " .. why, kind
end

local function describe(why)
  if type(why) == "number" then return errno.strerror(why) or ("error " .. why) end
  return tostring(why)
end

-- Forgets the connection without waiting to reconnect (its socket is closed:
-- a call that was using it fails on its next read or write).
local function drop(self)
  local conn = self.conn
  self.conn = nil
  if conn ~= nil then pcall(conn.sock.close, conn.sock) end
end

-- A failure that leaves the connection in an unknown state (lost, timed
-- out, a reply that cannot be parsed): the connection goes, and no new one
-- is tried for RETRY seconds, so that calls meanwhile fail at once.
local function lose(self, kind, why)
  drop(self)
  self.down = why
  self.retry_at = monotime() + RETRY
  return failure(self, kind, why)
end

local function is_error(reply)
  return type(reply) == "table" and type(reply.err) == "string"
end

-- The failure for a reply that is an error or not of the expected shape
-- (the connection stays: it is still in step with the server).
local function refused(self, command, reply)
  if is_error(reply) then return failure(self, "reply", command .. " failed: " .. reply.err) end
  return failure(self, "reply", "unexpected reply to " .. command)
end

-- --------------------------------------------------------------- I/O

-- Writes data by the deadline; nil, kind, why otherwise. Every wait is a
-- cqueues poll: it yields inside a controller's coroutine and blocks
-- (until the deadline at most) elsewhere.
local function send(sock, data, deadline)
  local i, n = 1, #data
  while i <= n do
    local sent, why = sock:send(data, i, n, "bf")
    i = i + sent
    if i <= n then
      if why ~= EAGAIN then return nil, "closed", "connection lost (" .. describe(why) .. ")" end
      local left = deadline - monotime()
      if left <= 0 then return nil, "timeout" end
      poll(sock, left)
    end
  end
  return true
end

local function flush(sock, deadline)
  local ok, why = sock:flush("n", math.max(deadline - monotime(), 0))
  if ok then return true end
  if why == errno.ETIMEDOUT then return nil, "timeout" end
  return nil, "closed", "connection lost (" .. describe(why) .. ")"
end

-- The next reply of the connection, read by the deadline (split: see
-- codec:reply).
local function receive(conn, deadline, split)
  local codec, sock = conn.codec, conn.sock
  while true do
    local reply, bad = codec:reply(split)
    if reply ~= nil then return reply end
    if bad then return nil, "protocol", "protocol error: " .. bad end
    local data, why = sock:recv(-READ_SIZE, "b")
    if data then
      local ok, err = codec:feed(data)
      if not ok then return nil, "protocol", "protocol error: " .. err end
    elseif why == EAGAIN then
      local left = deadline - monotime()
      if left <= 0 then return nil, "timeout" end
      poll(sock, left)
    else
      return nil, "closed", "connection lost (" .. (why and describe(why) or "closed by the server") .. ")"
    end
  end
end

-- Sends the commands (lists of arguments; `split` set: strings of its size
-- or more come as { head, tail }) as one pipeline and reads one reply for
-- each: the list of replies, or nil, kind, why.
local function transact(conn, commands, deadline)
  local codec, sock = conn.codec, conn.sock
  for i = 1, #commands do
    local cmd = commands[i]
    local bytes, err = codec:command(unpack(cmd, 1, #cmd))
    if not bytes then return nil, "error", err end
    local ok, kind, why = send(sock, bytes, deadline)
    if not ok then return nil, kind, why end
  end
  local ok, kind, why = flush(sock, deadline)
  if not ok then return nil, kind, why end
  local replies = {}
  for i = 1, #commands do
    local reply, rkind, rwhy = receive(conn, deadline, commands[i].split)
    if reply == nil then return nil, rkind, rwhy end
    replies[i] = reply
  end
  return replies
end

-- ----------------------------------------------------------- connecting

local function no_errno(_, _, why) return why end

-- A connection, authenticated, on the right database, its layout version
-- checked; or nil, kind, why.
local function open(self, deadline)
  local sock = socket.connect { host = self.host, port = self.port, nodelay = true }
  sock:onerror(no_errno)
  local ok, why = sock:connect(math.max(deadline - monotime(), 0))
  if not ok then
    pcall(sock.close, sock)
    if why == errno.ETIMEDOUT then return nil, "timeout" end
    return nil, "connect", "cannot connect (" .. describe(why) .. ")"
  end
  local conn = { sock = sock, codec = assert(resp.codec(MAX_REPLY)) }
  local commands, auth, sel = {}, nil, nil
  if self.password ~= nil then
    commands[#commands + 1] = { "AUTH", self.password }
    auth = #commands
  end
  if self.db ~= 0 then
    commands[#commands + 1] = { "SELECT", tostring(self.db) }
    sel = #commands
  end
  commands[#commands + 1] = { "SET", self.k_format, FORMAT, "NX" }
  commands[#commands + 1] = { "GET", self.k_format }
  local replies, kind, err = transact(conn, commands, deadline)
  local function fail(k, w)
    pcall(sock.close, sock)
    return nil, k, w
  end
  if not replies then return fail(kind, err) end
  if auth and is_error(replies[auth]) then return fail("auth", "AUTH failed: " .. replies[auth].err) end
  for _, reply in ipairs(replies) do
    if is_error(reply) and reply.err:find("^NOAUTH") then
      return fail("auth", "the server wants a password (AUTH), none was given: " .. reply.err)
    end
  end
  if sel and is_error(replies[sel]) then
    return fail("reply", "SELECT " .. self.db .. " failed: " .. replies[sel].err)
  end
  local format = replies[#replies]
  if is_error(format) then
    return fail("reply", "cannot read " .. self.k_format .. ": " .. format.err
      .. " (another program uses the prefix " .. self.prefix .. "; choose another prefix)")
  end
  if format ~= FORMAT then
    if type(format) ~= "string" or not format:find("^%d+$") then
      return fail("reply", self.k_format .. " holds something other than a layout version (another program "
        .. "uses the prefix " .. self.prefix .. "; choose another prefix)")
    end
    -- Another layout version wrote here: its entries are never read (their
    -- tags differ). An older one is taken over; a newer one is left in place.
    if tonumber(format) < tonumber(FORMAT) then
      local r, k2, w2 = transact(conn, { { "SET", self.k_format, FORMAT } }, deadline)
      if not r then return fail(k2, w2) end
    end
  end
  return conn
end

-- ---------------------------------------------------------- one at a time

-- A connection carries one exchange at a time. `holder` is the call using
-- it ({ co = its coroutine, deadline = when it gives up }); others wait on
-- `turn` inside a cqueues coroutine, or fail at once elsewhere (only a
-- finalizer or a hook run during a call could get there). Every wait of a
-- holder ends by its deadline, so one still holding on past it (its
-- coroutine dead, or never resumed: its controller was dropped) is taken
-- over: it would have failed anyway, and what it left on the wire is
-- unknown, so its connection goes. A call thus holds the store for at most
-- its timeout.
local function wait_turn(self, deadline)
  while self.holder ~= nil do
    local holder = self.holder
    local now = monotime()
    if coroutine.status(holder.co) == "dead" or now > holder.deadline + STUCK then
      self.holder = nil
      drop(self)
      return true
    end
    if holder.co == coroutine.running() or not running() then
      return nil, "the store is in use by another call (one waiting in a cqueues coroutine, or this coroutine's own)"
    end
    if now >= deadline then return nil, "timed out waiting for another call of this store" end
    self.waiting = self.waiting + 1
    self.turn:wait(math.min(deadline, holder.deadline + STUCK) - now)
    self.waiting = self.waiting - 1
  end
  return true
end

-- The exchange itself, on the connection (opened first if there is none).
local function session(self, holder, commands, deadline)
  local conn = self.conn
  if conn == nil then
    local c, kind, why = open(self, deadline)
    if c == nil then return nil, kind, why end
    if self.holder ~= holder then -- taken over while connecting: the new holder has its own
      pcall(c.sock.close, c.sock)
      return nil
    end
    conn = c
    self.conn = c
  end
  return transact(conn, commands, deadline)
end

-- Runs one exchange (opening the connection first if there is none) and
-- returns the replies, or nil, message, kind. Never raises: an error
-- raised below (by cqueues, or memory) is a failure like the others.
local function exchange(self, commands)
  local deadline = monotime() + self.timeout
  if self.holder ~= nil then
    local ok, why = wait_turn(self, deadline)
    if not ok then return failure(self, "busy", why) end
  end
  if self.conn == nil and monotime() < self.retry_at then
    return failure(self, "down", ("down, next attempt in %.1f s (%s)"):format(self.retry_at - monotime(),
      tostring(self.down)))
  end
  local holder = { co = coroutine.running(), deadline = deadline }
  self.holder = holder
  local ok, replies, kind, why = pcall(session, self, holder, commands, deadline)
  if self.holder ~= holder then
    -- taken over while this call was stuck: the state is the new holder's
    return failure(self, "busy", "this call was stuck and its connection was taken over")
  end
  self.holder = nil
  if self.waiting > 0 then self.turn:signal() end
  if not ok then return lose(self, "error", describe(replies)) end
  if replies == nil then
    if kind == "timeout" then why = ("no answer within %g s (timeout)"):format(self.timeout) end
    return lose(self, kind, why)
  end
  self.down = nil
  return replies
end

-- ----------------------------------------------------------- connect

local DEFAULTS = { host = "127.0.0.1", port = 6379, db = 0, prefix = "cache_resource:", timeout = 1 }
local CHECKS = {
  host = function(v) return type(v) == "string" and #v > 0, "a host name or address" end,
  port = function(v) return math.type(v) == "integer" and v >= 1 and v <= 65535, "an integer from 1 to 65535" end,
  db = function(v) return math.type(v) == "integer" and v >= 0, "an integer >= 0" end,
  password = function(v) return type(v) == "string", "a string" end,
  prefix = function(v) return type(v) == "string", "a string" end,
  timeout = function(v) return type(v) == "number" and v > 0 and v < math.huge, "seconds > 0" end,
}

--- A store on a Redis server. Nothing is sent yet: the connection is made
-- by the first call (and made again after a failure, at most once a second).
-- @tparam[opt] table opts the options
-- @tparam[opt="127.0.0.1"] string opts.host the server's host name or address
-- @tparam[opt=6379] integer opts.port its TCP port
-- @tparam[opt=0] integer opts.db the database number (SELECT)
-- @tparam[opt] string opts.password sent with AUTH when given
-- @tparam[opt="cache_resource:"] string opts.prefix the start of every key this store uses: apps that
-- share a server use different prefixes
-- @tparam[opt=1] number opts.timeout seconds a call may wait for the server at most
-- @return the store; raises for a bad option
function M.connect(opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    error("cache_resource.redis.connect: options table expected, got " .. type(opts), 2)
  end
  for name in pairs(opts) do
    if CHECKS[name] == nil then
      error("cache_resource.redis.connect: unknown option '" .. tostring(name) .. "' (known: db, host, "
        .. "password, port, prefix, timeout)", 2)
    end
  end
  local o = {}
  for name, check in pairs(CHECKS) do
    local v = opts[name]
    if v == nil then v = DEFAULTS[name] end
    if v ~= nil then
      local ok, expected = check(v)
      if not ok then
        error(("cache_resource.redis.connect: bad option '%s' (%s expected, got %s)"):format(name, expected,
          type(v) == "string" and ("%q"):format(v) or tostring(v)), 2)
      end
    end
    o[name] = v
  end
  local host = o.host:find(":", 1, true) and "[" .. o.host .. "]" or o.host
  local p = o.prefix
  return setmetatable({
    host = o.host, port = o.port, db = o.db, password = o.password, prefix = p, timeout = o.timeout,
    name = ("redis://%s:%d/%d"):format(host, o.port, o.db),
    k_format = p .. "format", k_gen = p .. "gen", k_ns = p .. "ns",
    p_gen = p .. "gen:", p_entry = p .. "e:", p_index = p .. "idx:",
    conn = nil,          -- { sock, codec }, or nil when not connected
    retry_at = 0,        -- monotonic time before which no connection is tried
    down = nil,          -- why the last connection failed, while it has not been replaced
    holder = nil,        -- the call using the connection (wait_turn)
    turn = condition.new(),
    waiting = 0,         -- calls waiting on turn
    tags = {},           -- ns -> the tag of the counters last read
  }, Store)
end

-- ----------------------------------------------------------- the store

--- A store, from `connect`: the methods every store has, `tostring(store)`
-- ("redis://host:port/db"), and `command` and `close`. Its fields are its
-- own.
-- @type Store

-- A name a store is given (ns, key) as it goes into a Redis key.
local function bad_name(what, s)
  if type(s) ~= "string" or #s == 0 or #s > 64 or s:find("[^0-9a-f]") then
    return ("bad %s (lowercase hex digits expected, got %s)"):format(what,
      type(s) == "string" and ("%q"):format(s:sub(1, 40)) or type(s))
  end
end

local function bad_names(ns, key)
  return bad_name("ns", ns) or bad_name("key", key)
end

-- A counter as an MGET returns it (a decimal string, false for a missing
-- key) in the 20 digits of a tag; nil when it is not a counter.
local function digits(c)
  if c == false then return ("0"):rep(20) end
  if type(c) ~= "string" or #c > 20 or c:find("[^0-9]") or #c == 0 then return nil end
  return ("0"):rep(20 - #c) .. c
end

-- The tag of entries written while the counters read c_ns, c_all.
local function tag_of(c_ns, c_all)
  local d_ns, d_all = digits(c_ns), digits(c_all)
  if not d_ns or not d_all then return nil end
  return TAG .. d_ns .. " " .. d_all .. "\n"
end

local function counter(c)
  if c == false then return 0 end
  return type(c) == "string" and c:find("^%d+$") and math.tointeger(tonumber(c)) or nil
end

--- The bytes stored for `key` of `ns`, or nil when there are none (never
-- stored, deleted, expired, cleared).
-- @tparam string ns the function identity (lowercase hex digits)
-- @tparam string key the key digest (lowercase hex digits)
-- @treturn ?string the bytes, exactly as they were set
-- @return or nil, a message and a kind (`"down"`, `"timeout"`, `"auth"`...) on a failure
function Store:get(ns, key)
  local bad = bad_names(ns, key)
  if bad then return failure(self, "argument", bad) end
  local entry = self.p_entry .. ns .. ":" .. key
  local replies, err, kind = exchange(self, { { "MGET", self.p_gen .. ns, self.k_gen, entry, split = TAG_SIZE } })
  if not replies then return nil, err, kind end
  local m = replies[1]
  if type(m) ~= "table" or m.err or #m ~= 3 then return refused(self, "MGET", m) end
  local tag = tag_of(m[1], m[2])
  if tag == nil then return refused(self, "MGET", m) end
  self.tags[ns] = tag
  local v = m[3]
  if type(v) == "table" and v.head == tag and type(v.tail) == "string" then return v.tail end
  return nil
end

--- Stores `bytes` for `key` of `ns`, replacing what was there: one Redis
-- string, written with one SET that has Redis drop it `ttl` seconds later
-- (PX), or never without a ttl.
-- @tparam string ns the function identity
-- @tparam string key the key digest
-- @tparam string bytes the entry (any bytes)
-- @tparam ?number ttl seconds until the entry is dropped; nil (or math.huge): never
-- @treturn boolean true
-- @return or nil, a message and a kind on a failure
function Store:set(ns, key, bytes, ttl)
  local bad = bad_names(ns, key)
  if bad then return failure(self, "argument", bad) end
  if type(bytes) ~= "string" then
    return failure(self, "argument", "bad bytes (a string expected, got " .. type(bytes) .. ")")
  end
  if ttl ~= nil and (type(ttl) ~= "number" or ttl ~= ttl) then
    return failure(self, "argument", "bad ttl (seconds or nil expected, got " .. tostring(ttl) .. ")")
  end
  if ttl ~= nil and ttl <= 0 then return self:delete(ns, key) end -- expired as it is written
  local now = os.time()
  local ms = ttl and math.ceil(ttl * 1000)
  if ms and ms >= 2 ^ 53 then ms = nil end -- as good as never
  local score = ms and ("%.17g"):format(now + ttl) or "+inf"
  local entry, index = self.p_entry .. ns .. ":" .. key, self.p_index .. ns
  local tag = self.tags[ns]
  if tag == nil then
    local gen, err, kind = self:generation(ns) -- reads the counters into self.tags
    if gen == nil then return nil, err, kind end
    tag = self.tags[ns]
  end
  -- The counters are read in the same transaction: when a clear came
  -- between the read of `tag` and the write, the entry is hidden, and it is
  -- written again once with the counters of now (the last write wins).
  for _ = 1, 2 do
    local set = { "SET", entry, tag .. bytes }
    if ms then set[4], set[5] = "PX", ("%d"):format(ms) end
    local replies, err, kind = exchange(self, {
      { "MULTI" }, set, { "ZADD", index, score, key }, { "ZREMRANGEBYSCORE", index, "-inf", "(" .. now },
      { "SADD", self.k_ns, ns }, { "MGET", self.p_gen .. ns, self.k_gen }, { "EXEC" } })
    if not replies then return nil, err, kind end
    for i = 1, 6 do
      if is_error(replies[i]) then return refused(self, i == 1 and "MULTI" or "SET", replies[i]) end
    end
    local done = replies[7]
    if type(done) ~= "table" or done.err or #done ~= 5 then return refused(self, "SET", done) end
    for i = 1, 4 do
      if is_error(done[i]) then return refused(self, "SET", done[i]) end
    end
    local counters = done[5]
    local now_tag = type(counters) == "table" and tag_of(counters[1], counters[2])
    if not now_tag then return refused(self, "MGET", counters) end
    self.tags[ns] = now_tag
    if now_tag == tag then return true end
    tag = now_tag
  end
  return true -- cleared again meanwhile: hidden, as if written before that clear
end

--- Removes the entry for `key` of `ns`.
-- @tparam string ns the function identity
-- @tparam string key the key digest
-- @treturn boolean true
-- @return or nil, a message and a kind on a failure
function Store:delete(ns, key)
  local bad = bad_names(ns, key)
  if bad then return failure(self, "argument", bad) end
  local replies, err, kind = exchange(self, { { "MULTI" }, { "UNLINK", self.p_entry .. ns .. ":" .. key },
    { "ZREM", self.p_index .. ns, key }, { "EXEC" } })
  if not replies then return nil, err, kind end
  for i = 1, 3 do
    if is_error(replies[i]) then return refused(self, "UNLINK", replies[i]) end
  end
  local done = replies[4]
  if type(done) ~= "table" or done.err then return refused(self, "UNLINK", done) end
  return true
end

-- UNLINKs the entries of `ns` named by `keys` (an index's members), a few
-- exchanges of at most CLEAR_COMMANDS commands of UNLINK_KEYS keys each.
local function unlink_entries(self, ns, keys)
  local commands, cmd = {}, nil
  local function run()
    if #commands == 0 then return true end
    local replies, err, kind = exchange(self, commands)
    commands = {}
    if not replies then return nil, err, kind end
    for _, reply in ipairs(replies) do
      if is_error(reply) then return refused(self, "UNLINK", reply) end
    end
    return true
  end
  for _, key in ipairs(keys) do
    if type(key) == "string" and not bad_name("key", key) then
      if cmd == nil or #cmd > UNLINK_KEYS then
        if #commands >= CLEAR_COMMANDS then
          local ok, err, kind = run()
          if not ok then return nil, err, kind end
        end
        cmd = { "UNLINK" }
        commands[#commands + 1] = cmd
      end
      cmd[#cmd + 1] = self.p_entry .. ns .. ":" .. key
    end
  end
  return run()
end

-- After the counter was bumped: a failure to remove the hidden entries.
local function not_removed(err, kind)
  return nil, err .. " (the clear took effect; some hidden entries were not removed)", kind
end

-- clear(nil): bumps the global counter, then empties every index.
local function clear_all(self)
  local replies, err, kind = exchange(self, { { "MULTI" }, { "INCR", self.k_gen }, { "SMEMBERS", self.k_ns },
    { "EXEC" } })
  if not replies then return nil, err, kind end
  local done = replies[4]
  if type(done) ~= "table" or done.err or type(done[1]) ~= "number" or type(done[2]) ~= "table" then
    return refused(self, "INCR", is_error(replies[2]) and replies[2] or done)
  end
  self.tags = {}
  local names = {}
  for _, ns in ipairs(done[2]) do
    if type(ns) == "string" and not bad_name("ns", ns) then names[#names + 1] = ns end
  end
  -- Each index is read and dropped, and its ns taken out of the set, in
  -- one transaction: an entry written meanwhile is in the index taken or
  -- in a new one, never lost to later clears.
  for first = 1, #names, CLEAR_COMMANDS // 4 do
    local batch = { { "MULTI" } }
    local last = math.min(#names, first + CLEAR_COMMANDS // 4 - 1)
    for i = first, last do
      local index = self.p_index .. names[i]
      batch[#batch + 1] = { "ZRANGE", index, "0", "-1" }
      batch[#batch + 1] = { "UNLINK", index }
      batch[#batch + 1] = { "SREM", self.k_ns, names[i] }
    end
    batch[#batch + 1] = { "EXEC" }
    local r, e, k = exchange(self, batch)
    if not r then return not_removed(e, k) end
    local results = r[#r]
    if type(results) ~= "table" or results.err then return not_removed(select(2, refused(self, "ZRANGE", results))) end
    for i = first, last do
      local keys = results[(i - first) * 3 + 1]
      if type(keys) == "table" and not keys.err then
        local ok, e2, k2 = unlink_entries(self, names[i], keys)
        if not ok then return not_removed(e2, k2) end
      end
    end
  end
  return true
end

--- Removes every entry of `ns`, or of every ns when `ns` is nil: bumps the
-- generation counter (INCR), which hides the entries from every reader at
-- once, then removes them.
-- @tparam ?string ns the function identity; nil: everything under the prefix
-- @treturn boolean true
-- @return or nil, a message and a kind on a failure
function Store:clear(ns)
  if ns == nil then return clear_all(self) end
  local bad = bad_name("ns", ns)
  if bad then return failure(self, "argument", bad) end
  local index = self.p_index .. ns
  local replies, err, kind = exchange(self, { { "MULTI" }, { "INCR", self.p_gen .. ns },
    { "ZRANGE", index, "0", "-1" }, { "UNLINK", index }, { "SREM", self.k_ns, ns }, { "EXEC" } })
  if not replies then return nil, err, kind end
  local done = replies[6]
  if type(done) ~= "table" or done.err or type(done[1]) ~= "number" or type(done[2]) ~= "table" then
    return refused(self, "INCR", is_error(replies[2]) and replies[2] or done)
  end
  self.tags[ns] = nil
  local ok, e2, k2 = unlink_entries(self, ns, done[2])
  if not ok then return not_removed(e2, k2) end
  return true
end

--- A number that changes whenever `ns`, or everything, is cleared (by any
-- process): the sum of the two counters.
-- @tparam string ns the function identity
-- @treturn integer the generation
-- @return or nil, a message and a kind on a failure
function Store:generation(ns)
  local bad = bad_name("ns", ns)
  if bad then return failure(self, "argument", bad) end
  local replies, err, kind = exchange(self, { { "MGET", self.p_gen .. ns, self.k_gen } })
  if not replies then return nil, err, kind end
  local m = replies[1]
  local c_ns, c_all = type(m) == "table" and counter(m[1]), type(m) == "table" and counter(m[2])
  if not c_ns or not c_all then return refused(self, "MGET", m) end
  self.tags[ns] = tag_of(m[1], m[2])
  return c_ns + c_all
end

--- Sends one command on the store's connection, the path every method
-- takes, and returns its reply: for diagnostics (`store:command("INFO",
-- "memory")`) and benchmarks.
-- @string name the command
-- @param ... its arguments (strings or numbers)
-- @return the reply: a string (a bulk string or a status), an integer,
-- false (nil), a table of replies (an array) or `{ err = message }` (an
-- error reply); or nil, a message and a kind on a failure
function Store:command(name, ...)
  local cmd = { name, ... }
  for i = 1, select("#", ...) + 1 do
    local t = type(cmd[i])
    if t ~= "string" and t ~= "number" then
      return failure(self, "argument", ("bad argument #%d to command (a string expected, got %s)"):format(i, t))
    end
  end
  local replies, err, kind = exchange(self, { cmd })
  if not replies then return nil, err, kind end
  return replies[1]
end

--- Closes the connection; the next call opens a new one at once.
function Store:close()
  drop(self)
  self.retry_at = 0
end

function Store:__tostring()
  return self.name
end

--- The layout version this module writes, which a store records under
-- `prefix .. "format"`.
M.FORMAT = FORMAT

return M
