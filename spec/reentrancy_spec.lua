-- Every Lua function the C code calls, doing everything it could do, in
-- the middle of every kind of call. A generated matrix:
--   callback (clock, on_release, validate, hash_funcs, widget source,
--   spinner hook, waiter, a __gc finalizer)
-- x action (clear one function / all, end the current / another session,
--   call the same key / another key / another cached function, change the
--   clock / the waiter, raise a string / table / nil, collectgarbage())
-- x scope (global / session) x once / always, for cache_resource and for
-- cache_data (which has no on_release or validate; its hits decode copies,
-- and every value it returns must be a fresh table).
-- Each case runs the same script of operations (misses, hits, evictions,
-- a keyed clear, expiry, a full clear, peek, two coroutines on one key) and
-- checks that every operation returns, that what it returns is right (or is
-- the error the callback raised, as that callback reports errors), and
-- that registry references come back to their baseline.
local cr = require "cache_resource"
local support = require "support"

local registry_objects = support.registry_objects

local gc_pace = support.gc_pace

local ui_text = cr.replayable(function() end, "reentrancy.text")
local function ui_arg() end -- a function argument: recorded by reference

-- ---- actions -----------------------------------------------------------

local ACTIONS = {
  { name = "clear one function", run = function(ctx) cr.clear(ctx.f) end },
  { name = "clear all", run = function() cr.clear() end },
  { name = "end the current session", run = function()
    local id = cr.session()
    if id then cr.end_session(id) end
  end, ends_current = true },
  { name = "end another session", run = function() cr.end_session("other") end },
  { name = "call the same key", run = function(ctx) ctx.f(ctx.arg(ctx.key)) end },
  { name = "call another key", run = function(ctx) ctx.f(ctx.arg(99)) end },
  { name = "call another cached function", run = function(ctx) ctx.g(1) end },
  { name = "change the clock", run = function(ctx)
    local t = ctx.now + 1000000 -- everything stored so far expires
    cr.set_clock(function() return t end)
  end },
  { name = "change the waiter", run = function() cr.set_waiter(function() coroutine.yield() end) end },
  { name = "raise a string", raise = "string" },
  { name = "raise a table", raise = "table" },
  { name = "raise nil", raise = "nil" },
  { name = "collectgarbage()", run = function() collectgarbage() end },
}

-- ---- callbacks ---------------------------------------------------------
-- errors: how an error raised in the callback reaches the caller:
-- "raw" unchanged, "wrapped" inside a message, "gc" as Lua 5.3 reports a
-- finalizer's error, "never" (a warning).

local CALLBACKS = {
  { name = "clock", errors = "raw" },
  { name = "on_release", errors = "never", resource_only = true },
  { name = "validate", errors = "never", resource_only = true }, -- a raise counts as falsy and warns
  { name = "hash_funcs", errors = "wrapped" },
  { name = "widget source", errors = "raw" },
  { name = "spinner hook", errors = "never" },
  { name = "waiter", errors = "raw" },
  -- Lua 5.4 turns a finalizer's error into a warning; 5.3 raises it where
  -- the collector ran, wrapped
  { name = "__gc finalizer", errors = _VERSION == "Lua 5.3" and "gc" or "never" },
}

-- Runs the action for callback invocations while the case is armed: once,
-- or at every invocation that is not nested in another action.
local function fire(ctx)
  if not ctx.armed or ctx.busy or (ctx.mode == "once" and ctx.fired > 0) then return end
  ctx.fired = ctx.fired + 1
  local action = ctx.action
  if action.raise then
    ctx.raised = ctx.raised + 1
    if action.raise == "string" then error("boom", 0)
    elseif action.raise == "table" then error(ctx.errobj)
    else error(nil) end
  end
  ctx.busy = true
  pcall(action.run, ctx) -- what the action itself hits is not the point
  ctx.busy = false
end

-- The cached functions of a case. f's body records UI calls (one copied
-- argument, one by reference), may read a widget, may yield.
local function make_functions(ctx, cb, scope, kind)
  local decorator = kind == "data" and cr.data or cr
  local opts = {
    name = "reentrancy " .. kind .. " f " .. cb.name .. " " .. scope,
    scope = scope, max_entries = 2, ttl = 100,
    on_release = kind == "resource" and function() end or nil,
  }
  if cb.name == "on_release" then opts.on_release = function() fire(ctx) end
  elseif cb.name == "validate" then opts.validate = function() fire(ctx); return true end
  elseif cb.name == "hash_funcs" then
    opts.hash_funcs = { table = function(t) fire(ctx); return t.id end }
  elseif cb.name == "widget source" then opts.experimental_allow_widgets = true
  end
  local runs = {}
  ctx.f = decorator(function(a)
    local k = type(a) == "table" and a.id or a
    ui_text(k, ui_arg)
    if opts.experimental_allow_widgets then
      runs[k] = (runs[k] or 0) + 1
      cr.widget_used("w" .. runs[k], runs[k]) -- a new widget each run widens the key
    end
    if ctx.yield_on[k] and coroutine.isyieldable() then coroutine.yield() end
    return { k = k }, "second"
  end, opts)
  ctx.g = decorator(function(k) return { k = k, g = true } end,
    { name = "reentrancy " .. kind .. " g " .. cb.name .. " " .. scope, scope = scope, ttl = 50 })
  ctx.arg = cb.name == "hash_funcs" and function(k) return { id = k } end or function(k) return k end
end

-- Installs the process-wide hooks of a case.
local function install_hooks(ctx, cb)
  cr.set_clock(function()
    if cb.name == "clock" then fire(ctx) end
    return ctx.now
  end)
  cr.set_waiter(function()
    if cb.name == "waiter" then fire(ctx) end
    coroutine.yield()
  end)
  if cb.name == "widget source" then cr.set_widget_source(function() fire(ctx); return 0 end) end
  if cb.name == "spinner hook" then cr.set_spinner(function() fire(ctx) end) end
end

-- __gc row: finalizable objects queued so that the collector runs them at
-- the allocation points inside the next operation. Primed with the
-- smallest steps until the first batch ran (the collector is then in its
-- finalizer phase). Lua 5.4 then runs the next batch (of ten) at about
-- every allocation point when its step multiplier is raised: the first
-- `skip` finalizers to run inside the operation do nothing, so each
-- operation has its action fire at a different allocation point. Lua 5.3
-- runs the rest at once, a fixed amount of allocation later (measured
-- once per case): padding moves that point into the operation.
local function prime(ctx, n)
  local mt = { __gc = function()
    ctx.finalized = ctx.finalized + 1
    if ctx.in_op then
      if ctx.skip > 0 then ctx.skip = ctx.skip - 1 else fire(ctx) end
    end
  end }
  gc_pace(1, _VERSION == "Lua 5.3" and 100 or 1, 1)
  ctx.skip = 0
  for _ = 1, n do setmetatable({}, mt) end
  local probe = false
  setmetatable({}, { __gc = function() probe = true end }) -- finalized first
  local steps = 0
  -- small steps: one batch of finalizers (the probe's) each, at most
  repeat collectgarbage("step", _VERSION == "Lua 5.3" and 0 or 4); steps = steps + 1
  until probe or steps > 1000000
end

local function queue_finalizers(ctx)
  local shift = (ctx.op_index * 7 + ctx.case_index * 3) % 6
  if _VERSION == "Lua 5.3" then
    if not ctx.gap then -- bytes from the priming step to the burst
      prime(ctx, 40)
      local done, kb0, keep = ctx.finalized, collectgarbage("count"), {}
      while ctx.finalized == done and #keep < 100000 do keep[#keep + 1] = {} end
      ctx.gap = math.floor((collectgarbage("count") - kb0) * 1024)
    end
    prime(ctx, 40)
    local _ = string.rep("x", math.max(0, ctx.gap - 200 - shift * 250))
  else
    prime(ctx, shift * 10 + 40)
    ctx.skip = shift * 10
    gc_pace(1, 100, 1)
    collectgarbage("step", 0) -- one more batch, and no allocation debt left over
  end
end

-- ---- checks ------------------------------------------------------------

-- Is this error what the case may produce? Errors come from the callback
-- raising (as the callback reports them) or from ending the current
-- session of a session-scoped function.
local function expected_error(ctx, cb, scope, err, raised_during)
  if scope == "session" and ctx.action.ends_current and type(err) == "string"
    and err:find("no session is set", 1, true) then
    return true
  end
  if not raised_during or cb.errors == "never" then return false end
  local r = ctx.action.raise
  if cb.errors == "gc" then
    return type(err) == "string" and err:find("error in __gc metamethod", 1, true) ~= nil
  end
  if cb.errors == "raw" then
    if r == "string" then return err == "boom" end
    if r == "table" then return rawequal(err, ctx.errobj) end
    return err == nil
  end
  -- wrapped: the hash function's error inside a message naming it
  local shown = r == "string" and "boom" or r
  return type(err) == "string" and err:find("raised an error while hashing", 1, true) ~= nil
    and err:find(shown, 1, true) ~= nil
end

-- cache_data: no table is returned twice (ctx.returned holds them weakly).
local function check_values(ctx, k, v, second)
  if type(v) ~= "table" or v.k ~= k or second ~= "second" then return false end
  if ctx.returned then
    if ctx.returned[v] then return false end
    ctx.returned[v] = true
  end
  return true
end

-- Runs op(); returns a failure description, or nil.
local function run_op(ctx, cb, scope, label, k, op)
  cr.set_session("main")
  ctx.key = k
  if cb.name == "__gc finalizer" then
    queue_finalizers(ctx)
  end
  local raised0 = ctx.raised
  ctx.in_op = true
  -- no allocation before in_op is off: a finalizer run here is not the op's
  local ok, r1 = pcall(op)
  ctx.in_op = false
  local results = { ok, r1 }
  if cb.name == "__gc finalizer" then
    gc_pace(200, 100, 13)
  end
  local raised_during = ctx.raised > raised0
  if not results[1] then
    if expected_error(ctx, cb, scope, results[2], raised_during) then return nil end
    return ("%s raised %s"):format(label, tostring(results[2]))
  end
  return results[2] and results[2](results, raised_during) or nil
end

-- The script every case runs. Each op returns a checker (or nil).
local function script(ctx, cb, scope)
  local f, arg = ctx.f, ctx.arg
  local function call(k)
    return function()
      local v, second = f(arg(k))
      return function()
        if not check_values(ctx, k, v, second) then return "f(" .. k .. ") returned wrong values" end
      end
    end
  end
  local function two_coroutines(k)
    return function()
      ctx.yield_on[k] = true
      local cos, res = {}, {}
      for i = 1, 2 do cos[i] = coroutine.create(function() return f(arg(k)) end) end
      local rounds = 0
      repeat
        local alive = false
        for i = 1, 2 do
          if coroutine.status(cos[i]) == "suspended" then
            alive = true
            local r = table.pack(coroutine.resume(cos[i]))
            if coroutine.status(cos[i]) == "dead" then res[i] = r end
          end
        end
        rounds = rounds + 1
      until not alive or rounds > 1000
      ctx.yield_on[k] = nil
      assert(rounds <= 1000, "a waiting call never returned")
      return function(_, raised_during)
        for i = 1, 2 do
          local r = res[i]
          if r[1] then
            if not check_values(ctx, k, r[2], r[3]) then return "coroutine " .. i .. " got wrong values" end
          elseif not expected_error(ctx, cb, scope, r[2], raised_during) then
            return "coroutine " .. i .. " raised " .. tostring(r[2])
          end
        end
      end
    end
  end
  return {
    { "miss f(1)", 1, call(1) },
    { "hit f(1)", 1, call(1) },
    { "miss f(2)", 2, call(2) },
    { "miss f(3), evicting", 3, call(3) },
    { "miss f(1), evicting", 1, call(1) },
    { "clear(f, 3)", 3, function() cr.clear(f, arg(3)) end },
    { "f(1) after expiry", 1, function() ctx.now = ctx.now + 200; return call(1)() end },
    { "clear(f)", 1, function() cr.clear(f) end },
    { "miss f(2) again", 2, call(2) },
    { "peek(f, 2)", 2, function()
      local r = table.pack(cr.peek(f, arg(2)))
      return function()
        if r.n > 0 and not check_values(ctx, 2, r[2], r[3]) then return "peek returned wrong values" end
      end
    end },
    { "two coroutines on f(5)", 5, two_coroutines(5) },
    { "hit f(2)", 2, call(2) },
  }
end

describe("reentrancy matrix", function()
  local saved_warn
  before_each(function()
    support.reset()
    saved_warn = rawget(_G, "warn")
  end)
  after_each(function()
    rawset(_G, "warn", saved_warn)
    gc_pace(200, 100, 13)
    cr.set_widget_source(nil)
    cr.set_spinner(nil)
    support.reset()
  end)

  local rows = {} -- kind x callback (cache_data has no on_release or validate)
  for _, kind in ipairs({ "resource", "data" }) do
    for _, cb in ipairs(CALLBACKS) do
      if kind == "resource" or not cb.resource_only then rows[#rows + 1] = { kind = kind, cb = cb } end
    end
  end
  local case_index = 0
  for _, row in ipairs(rows) do
    local kind, cb = row.kind, row.cb
    for _, action in ipairs(ACTIONS) do
      for _, scope in ipairs({ "global", "session" }) do
        for _, mode in ipairs({ "once", "always" }) do
          case_index = case_index + 1
          local index = case_index
          it(("cache_%s, %s: %s (%s scope, %s)"):format(kind, cb.name, action.name, scope, mode), function()
            local ctx = {
              action = action, mode = mode, now = 1000, fired = 0, raised = 0, finalized = 0,
              errobj = setmetatable({}, { __tostring = function() return "a table error" end }),
              yield_on = {}, case_index = index, op_index = 0,
              returned = kind == "data" and setmetatable({}, { __mode = "k" }) or nil,
            }
            make_functions(ctx, cb, scope, kind)
            -- cache_data: hits copy by C first, then by the compiled copy
            if kind == "data" then cr.set_replay_compile(2) end
            rawset(_G, "warn", function() end) -- on_release and spinner errors are reported here
            collectgarbage(); collectgarbage()
            local refs0, objects0 = cr.live_refs(), registry_objects()
            local snap = {}
            for k, v in pairs(debug.getregistry()) do snap[k] = v end

            install_hooks(ctx, cb)
            cr.set_session("other")
            ctx.f(ctx.arg(100)) -- another session with an entry to end
            cr.set_session("main")
            ctx.armed = true
            local failures = {}
            local ops = script(ctx, cb, scope)
            for i, op in ipairs(ops) do
              ctx.op_index = i
              local problem = run_op(ctx, cb, scope, op[1], op[2], op[3])
              if problem then failures[#failures + 1] = op[1] .. ": " .. problem end
            end
            -- the collector decides where finalizers run: misses until one ran inside a call
            local extra = 0
            while ctx.fired == 0 and extra < 50 do
              extra = extra + 1
              ctx.op_index = #ops + extra
              local k = 1000 + extra
              local problem = run_op(ctx, cb, scope, "extra miss", k, function()
                local v, second = ctx.f(ctx.arg(k))
                return function() if not check_values(ctx, k, v, second) then return "wrong values" end end
              end)
              if problem then failures[#failures + 1] = "extra miss: " .. problem end
            end
            ctx.armed = false

            assert.is_true(ctx.fired > 0, "the callback never ran its action")
            assert.same({}, failures)

            -- back to the baseline: hooks off, sessions ended, caches cleared
            cr.set_clock(nil)
            cr.set_waiter(nil)
            cr.set_widget_source(nil)
            cr.set_spinner(nil)
            cr.end_session("main")
            cr.end_session("other")
            cr.set_session(nil)
            cr.clear()
            cr.data.clear()
            collectgarbage(); collectgarbage()
            assert.equal(0, cr.stats(ctx.f).entries)
            assert.equal(refs0, cr.live_refs())
            local added = {}
            for k, v in pairs(debug.getregistry()) do
              if type(v) ~= "number" and snap[k] ~= v then
                local d = tostring(v)
                if type(v) == "table" then
                  local keys = {}
                  for kk, vv in pairs(v) do keys[#keys + 1] = ("%q=%s"):format(tostring(kk), tostring(vv)) end
                  d = d .. " {" .. table.concat(keys, ", ") .. "}"
                end
                added[#added + 1] = d
              end
            end
            assert.equal(objects0, registry_objects(), "left in the registry: " .. table.concat(added, ", "))
          end)
        end
      end
    end
  end
end)
