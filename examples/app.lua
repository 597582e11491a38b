-- The demo app: a script re-run top to bottom on every interaction, like a
-- Streamlit app. `make demo` runs it in the terminal, `make serve` in a
-- browser. Three cached resources: a word model that takes real work to
-- build, a SQLite connection, and a widget-keyed view; and cached data: a
-- query result that every run gets its own copy of, kept in a store across
-- restarts.
local cache_resource = require "cache_resource"
local cache_data = require "cache_resource.data"
local ui = require "cache_resource.ui"
local corpus = require "corpus"
local luasql = require "luasql.sqlite3"

local DB_PATH = os.getenv("CR_DEMO_DB") or "build/demo.sqlite3"
local SIZE = tonumber(os.getenv("CR_DEMO_SIZE") or "") or corpus.DEFAULT_SIZE

ui.title("Word model explorer")
ui.caption("Every interaction re-runs this script from the top; the cached resources make the re-runs fast.")

ui.sidebar:header("Settings")
local show_raw = ui.sidebar:checkbox("Show raw data")

-- Built once (about a second); every later run gets the same table and the
-- header and success message are replayed.
local load_model = cache_resource(function(size)
  ui.header("Data analysis")
  local model = corpus.build_model(size)
  ui.success(string.format("Loaded model: %d words, %d distinct", model.total, model.distinct))
  return model
end, { show_spinner = "Building the word model...", show_time = true })

-- One connection, checked on every hit, closed when it leaves the cache.
local get_db = cache_resource(function(path)
  local env = assert(luasql.sqlite3())
  local conn = assert(env:connect(path))
  assert(conn:execute("CREATE TABLE IF NOT EXISTS visits (id INTEGER PRIMARY KEY, at TEXT)"))
  ui.sidebar:info("Opened SQLite database " .. path)
  return conn, env
end, {
  ttl = "10m",
  validate = function(conn)
    local ok, cur = pcall(conn.execute, conn, "SELECT 1")
    if ok and cur then cur:close() end
    return ok and cur ~= nil
  end,
  on_release = function(conn, env)
    conn:close()
    env:close()
  end,
})

-- The slider (in the sidebar) is read inside the cached function: its value
-- is part of the key (experimental_allow_widgets), and `_model` is left out
-- of it. What it writes goes to the block active where it is called.
local top_words = cache_resource(function(_model)
  local n = ui.sidebar:slider("Top words", 3, 10, 5)
  local list = corpus.top(_model, n)
  ui.subheader(string.format("Top %d words", n))
  ui.write(table.concat(list, ", "))
  return list
end, { experimental_allow_widgets = true })

-- Where the query result below is kept besides memory: the default store
-- (SQLite, at cache_data.store_path()), or with CR_DEMO_REDIS_PORT a Redis
-- server on this machine, shared by every server process of the app. The
-- store object is a resource: every run gets the same one.
local demo_store = cache_resource(function(port)
  if port == nil then return true end
  return require("cache_resource.redis").connect { port = port, prefix = "cache_resource-demo:" }
end)

-- A query result, cached as data: each call gets its own copy, so the run
-- below may sort and extend it without changing what the next run gets.
-- `_db` (a connection) is left out of the key; the ten minutes of ttl are
-- how stale the list may be. With persist it is also kept in a store: the
-- next start of the app (a second `make demo`) finds it there instead of
-- querying again, and so do the other processes serving the app.
local recent_visits = cache_data(function(_db, limit)
  local rows = {}
  local cur = assert(_db:execute("SELECT id, at FROM visits ORDER BY id DESC LIMIT " .. math.tointeger(limit)))
  local row = cur:fetch({}, "a")
  while row do
    rows[#rows + 1] = { id = math.tointeger(tonumber(row.id)), at = row.at }
    row = cur:fetch({}, "a")
  end
  cur:close()
  return rows
end, { ttl = "10m", max_size = "64KB", persist = demo_store(tonumber(os.getenv("CR_DEMO_REDIS_PORT") or "")) })

local model = load_model(SIZE)
local db = get_db(DB_PATH)

assert(db:execute("INSERT INTO visits (at) VALUES (datetime('now'))"))
local cur = assert(db:execute("SELECT count(*) FROM visits"))
local visits = cur:fetch()
cur:close()

local left, right = ui.columns({ 3, 2 })
local top = ui.with(left, function() return top_words(model) end)
local first = top[1]:match("^%S+")
right:subheader("Next word")
right:text(string.format("After '%s' comes '%s'.", first, corpus.next_word(model, first)))
right:caption(string.format("This page has been rendered %d times (counted in SQLite).", visits))

local recent = recent_visits(db, 3)
table.sort(recent, function(a, b) return a.id < b.id end) -- the copy is this run's to change
local lines = {}
for i, v in ipairs(recent) do lines[i] = string.format("#%d at %s", v.id, v.at) end
right:caption("Recent visits (a cached query, at most 10 minutes old, kept across restarts): "
  .. table.concat(lines, "; "))

if show_raw then
  local raw = ui.expander("Raw data", true)
  raw:json({ total_words = model.total, distinct = model.distinct, most_common = corpus.top(model, 3) })
end

-- Stale-while-revalidate: this summary is at most 5 s old before it is
-- rebuilt, in the background: under `make serve` (cache_resource.cqueues is
-- the scheduler) a re-run past the 5 s shows the previous summary at once
-- and never waits for the new one. Without a scheduler (`make demo`) the
-- run that finds it stale rebuilds it itself.
local summary = cache_resource(function(_model) -- luacheck: ignore 214 (_model: not hashed, still used)
  return string.format("Summary built at %s: the three most common words are %s.", os.date("%H:%M:%S"),
    table.concat(corpus.top(_model, 3), ", "))
end, { ttl = "5s", refresh_mode = "background", show_spinner = false })
ui.caption(summary(model))
