-- The Lua side of cache_data's `persist`: every call of a store happens
-- here. Not part of the API: the core module calls it (src/cr_persist.c says
-- where the line between the two goes, and why).
--
-- A store method may yield (the Redis store does inside cqueues), raise,
-- return nil and a message, or return something else entirely. Each call
-- goes through `store_call`, which catches all of that: the function keeps
-- working from memory, `stats().store_errors` counts the failure, and one
-- warn() per episode says so. An episode of a store starts when a call
-- fails while no kind of call (reads: get, generation; writes: set, delete,
-- clear) of that store is failing, and a kind stops failing at its next
-- success: a full disk (writes fail, reads work) warns once, so does a
-- server that is down. Nothing read from a store runs: the envelope is
-- checked and decoded in C.
local cr = require "cache_resource"
local core = cr.data._persist

local HIT = core.hit_mark()
local unpack = table.unpack
local pack = table.pack

local M = {}

local METHODS = { "get", "set", "delete", "clear", "generation" }
local KIND = { get = "read", generation = "read", set = "write", delete = "write", clear = "write" }

-- store object -> { read = true?, write = true? }: the kinds failing now
local failing = setmetatable({}, { __mode = "k" })
-- cache (light userdata) -> true once a damaged entry of it was reported
local damage_reported = {}

-- The path of the default store (see cache_data.store_path).
function M.store_path()
  local function set(name)
    local v = os.getenv(name)
    return v ~= nil and v ~= "" and v or nil
  end
  local dir = set("CR_CACHE_DIR")
  if dir then return dir .. "/cache_data.sqlite3" end
  local xdg = set("XDG_CACHE_HOME")
  if xdg and xdg:sub(1, 1) == "/" then return xdg .. "/cache_resource/cache_data.sqlite3" end
  local home = set("HOME")
  if home then return home .. "/.cache/cache_resource/cache_data.sqlite3" end
  return nil, "no directory for the default store: set CR_CACHE_DIR, XDG_CACHE_HOME or HOME"
end

-- The default store of this process: opened on first use, once. `nil`
-- until tried, then the store, or false (it could not be opened: said
-- once, and every persist = true function works from memory).
local default = { store = nil, path = nil }

local function name_of(h)
  if not h.cache then return "cache_data.clear()" end
  return (select(2, core.info(h.cache)))
end

local function open_default(h)
  if default.store ~= nil then return default.store end
  local path, why = M.store_path()
  local store, note
  if path then
    local ok, sqlite = pcall(require, "cache_resource.sqlite")
    if not ok then
      why = "the module cache_resource.sqlite is not installed (" .. tostring(sqlite):match("^[^\n]*") .. ")"
    else
      ok, store, note = pcall(sqlite.open, path)
      if not ok then store, note = nil, store end
      if not store then why = tostring(note) end
    end
  end
  default.store = store or false
  if not store then
    if h.cache then core.count(h.cache, "store_errors") end
    core.report(("cache_data: the default store %s cannot be used (%s); functions with persist = true keep "
      .. "their entries in memory only"):format(path or "", why or "unknown reason"))
  elseif note then -- emptied at open: its entries were damaged, or of another format
    if h.cache then core.count(h.cache, "store_errors") end
    core.report(("cache_data: the default store %s: %s"):format(path, tostring(note)))
  end
  return default.store
end

local function store_of(h)
  if h.default then return open_default(h) end
  return h.store
end

local function invoke(store, method, ...)
  return store[method](store, ...)
end

-- What a method's results mean: ok (true/false) and its value, or the
-- reason it failed.
local function judge(method, ok, a, b)
  if not ok then return false, tostring(a) end
  if method == "get" then
    if a == nil then
      if b ~= nil then return false, tostring(b) end
      return true, nil
    end
    if type(a) ~= "string" then return false, "returned a " .. type(a) .. " (bytes or nil expected)" end
    return true, a
  elseif method == "generation" then
    local g = math.type(a) == "integer" and a or (math.type(a) == "float" and math.tointeger(a))
    if g then return true, g end
    if a == nil and b ~= nil then return false, tostring(b) end
    return false, "returned " .. (a == nil and "nil" or "a " .. type(a)) .. " (an integer expected)"
  else
    if a == false or (a == nil and b ~= nil) then return false, tostring(b or "it returned false") end
    return true, true
  end
end

-- Calls method of h's store: its result (nil for a missing entry), or nil
-- and the reason after a failure, which is counted and reported.
local function store_call(h, method, ...)
  local store = store_of(h)
  if not store then return nil, "no store" end
  local ok, value = judge(method, pcall(invoke, store, method, ...))
  local state = failing[store]
  if not state then
    state = {}
    failing[store] = state
  end
  local kind = KIND[method]
  if ok then
    state[kind] = nil
    return value
  end
  if h.cache then core.count(h.cache, "store_errors") end
  if not (state.read or state.write) then
    core.report(("cache_data: the store %s failed (%s for %s: %s); cached functions on it work from memory "
      .. "until it answers again"):format(h.description, method, name_of(h), value))
  end
  state[kind] = true
  return nil, value
end

-- A stored entry that could not be used: counted always, said once per
-- function and process.
local function damaged(h, name, why)
  core.count(h.cache, "store_errors")
  if damage_reported[h.cache] then return end
  damage_reported[h.cache] = true
  core.report(("cache_data: an entry of %s in the store %s could not be used: %s; it is recomputed and "
    .. "replaced (later damaged entries of %s are counted in store_errors, not reported)"):format(
    name, h.description, why, name))
end

-- Replays the records of an entry found in the store, through the
-- replayables of those names (recorded again into the computation, so the
-- entry kept in memory replays them too). False, replaying nothing, when
-- some name has no replayable in this process.
local function replay(records)
  if not records then return true end
  local fns = {}
  for i, rec in ipairs(records) do
    fns[i] = core.replayable(rec.name)
    if not fns[i] then return false end
  end
  local results = {}
  for i, rec in ipairs(records) do
    if rec.results then
      for pos, k in pairs(rec.results) do rec[pos] = results[k] end
    end
    results[i - 1] = fns[i](unpack(rec, 1, rec.n))
  end
  return true
end

local function is_failure(r)
  return r.n >= 2 and r[1] == nil and r[2] ~= nil
end

-- The miss of a persisted function, run by the computation in place of fn:
-- the store first; fn when it has no live entry; then the store again.
-- Returns fn's values, or HIT, the entry's lifetime left and its values.
function M.miss(h, call, f, fn, ...)
  local keyhex, keybytes = core.key(f, ...)
  local ns, name, ttl, max_stale, limits = core.info(h.cache)
  local bytes = store_call(h, "get", ns, keyhex)
  if bytes then
    local found = pack(core.open(h.cache, bytes, keybytes))
    if found[1] then
      if replay(found[3]) then return HIT, found[2], unpack(found, 4, found.n) end
    elseif found[2] ~= "expired" then
      damaged(h, name, found[2])
    end
  end
  core.count(h.cache, "miss", call)
  local r = pack(fn(...))
  if is_failure(r) then return unpack(r, 1, r.n) end -- failures are never stored
  local expiry = ttl == math.huge and math.huge or core.wallclock() + ttl
  local envelope, why, kind = core.seal(h.cache, call, keybytes, expiry, unpack(r, 1, r.n))
  if envelope then
    local life = ttl ~= math.huge and ttl + max_stale or nil
    if store_call(h, "set", ns, keyhex, envelope, life, limits) then core.count(h.cache, "store_writes") end
  elseif kind == "copy" then
    error(why, 0) -- what the miss of a function whose result cannot be copied raises
  elseif kind == "skip" then
    core.count(h.cache, "persist_skipped")
  end
  return unpack(r, 1, r.n)
end

local function read_generation(h)
  local g = store_call(h, "generation", (core.info(h.cache)))
  if g ~= nil then h.generation = g end
  return g
end

-- The generation check, at most once a second per function: when the
-- store's generation of this function changed (a clear, here or in
-- another process), its copies in memory go.
function M.check(h)
  local known = h.generation
  local g = read_generation(h)
  if g ~= nil and known ~= nil and g ~= known then core.drop(h.cache) end
end

-- clear(f): f's ns in its store; clear(f, ...): that one entry.
function M.clear(h, keyhex)
  local ns = core.info(h.cache)
  if keyhex then
    store_call(h, "delete", ns, keyhex)
  elseif store_call(h, "clear", ns) then
    read_generation(h) -- this process's own clear: nothing to drop later
  end
end

-- cache_data.clear(): the ns of every persisted function (its handles in
-- a list), then the default store whole: the one this process opened, or
-- the file at store_path() when there is one.
function M.clear_all(handles)
  for _, h in ipairs(handles) do
    if not h.default then M.clear(h) end
  end
  local path = M.store_path()
  local exists = default.store == nil and path and io.open(path, "rb")
  if exists then exists:close() end
  if default.store or exists then
    store_call({ default = true, description = path }, "clear", nil)
  end
  for _, h in ipairs(handles) do read_generation(h) end
end

local function describe(store)
  local ok, s = pcall(tostring, store)
  return ok and type(s) == "string" and s or "a store"
end

local function callable(f)
  if type(f) == "function" then return true end
  local mt = getmetatable(f)
  return type(mt) == "table" and rawget(mt, "__call") ~= nil
end

local function check_store(store)
  local t = type(store)
  if t ~= "table" and t ~= "userdata" then
    error(("cache_data: option 'persist' must be true, \"disk\", a store or false, got a %s"):format(t), 0)
  end
  for _, m in ipairs(METHODS) do
    local ok, f = pcall(function() return store[m] end)
    if not (ok and callable(f)) then
      error(("cache_data: option 'persist': the store has no method '%s' (a store has the methods get, set, "
        .. "delete, clear and generation)"):format(m), 0)
    end
  end
end

-- The handle of a persisted cache, from the wrap: persist = true/"disk"
-- (the default store) or a store object. The previous handle stays when
-- the same store is given again (a script re-run re-wraps its functions),
-- so the generation it read is kept.
function M.handle(cache, value, old)
  local disk = value == true or value == "disk"
  if old and ((disk and old.default) or (not disk and rawequal(old.store, value))) then return old end
  local h = { cache = cache }
  if disk then
    h.default = true
    h.description = M.store_path() or "the default store (no directory for it)"
  else
    check_store(value)
    h.store = value
    h.description = describe(value)
  end
  return h
end

return M
