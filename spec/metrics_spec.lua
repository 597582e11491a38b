-- cache_resource.metrics: stats() rows (and a server's counts) in the
-- Prometheus text format, read back by a parser and checked by promtool.
local cr = require "cache_resource"
local metrics = require "cache_resource.metrics"
local support = require "support"

-- What a stats() row counts (only grows) and measures (goes up and down);
-- its other numeric fields are settings.
local COUNTERS = { "hits", "stale_hits", "misses", "failures", "refreshes", "refresh_failures", "evictions",
  "expirations", "store_hits", "store_writes", "store_errors", "persist_skipped" }
local GAUGES = { "entries", "bytes", "replay_bytes" }
local SETTINGS = { ttl = true, max_entries = true, max_size = true }

local function series(name, fn, kind)
  return string.format('%s{function="%s",kind="%s"}', name, metrics.escape_label(fn), kind or "resource")
end

local HAS_PROMTOOL = support.shell("command -v promtool >/dev/null")

-- promtool's verdict on a text: ok, its output.
local function promtool(text)
  local dir = support.tmpdir()
  local path = support.write_file(dir .. "/metrics.txt", text)
  local ok, out = support.shell("promtool check metrics <" .. support.shell_quote(path) .. " 2>&1")
  support.remove_tree(dir)
  return ok, out
end

local function it_promtool(name, fn)
  if HAS_PROMTOOL then return it(name, fn) end
  return pending(name .. " [skipped: promtool is not installed (Debian package prometheus)]")
end

describe("cache_resource.metrics", function()
  before_each(support.reset)

  it("writes every counter of a stats() row as cache_resource_<field>_total and its gauges as they are", function()
    local square = cr(function(x) return x * x end, { name = "metrics-square", max_entries = 1 })
    square(2); square(2); square(3)
    local failing = cr(function() return nil, "down" end, { name = "metrics-failing" })
    failing()
    local rows = cr.stats()
    local m = support.parse_metrics(metrics.render(rows))
    -- what each series should be: its field summed over the rows it labels
    -- (other specs' functions may share a display name)
    local expected, ours = {}, {}
    for _, row in ipairs(rows) do
      ours[row.name] = true
      for _, list in ipairs({ { COUNTERS, "_total", "counter" }, { GAUGES, "", "gauge" } }) do
        for _, field in ipairs(list[1]) do
          if row[field] ~= nil then
            local name = "cache_resource_" .. field .. list[2]
            local key = series(name, row.name, row.kind)
            expected[key] = (expected[key] or 0) + row[field]
            assert.equal(list[3], m.type[name], name)
          end
        end
      end
    end
    assert.is_true(ours["metrics-square"] and ours["metrics-failing"])
    for key, value in pairs(expected) do assert.equal(value, m.samples[key], key) end
    for key in pairs(m.samples) do assert.truthy(expected[key], key .. " is not in stats()") end
    -- the calls above moved the counters these samples show
    local s = cr.stats(square)
    assert.is_true(s.hits >= 1 and s.misses >= 2 and s.evictions >= 1)
    assert.equal(1, cr.stats(failing).failures)
    for _, name in ipairs(m.order) do assert.truthy(m.help[name] ~= "", name .. " has no help text") end
  end)

  it("exports every numeric field of a stats() row that is not a setting", function()
    local known = {}
    for _, f in ipairs(COUNTERS) do known[f] = true end
    for _, f in ipairs(GAUGES) do known[f] = true end
    local row = cr.stats(cr(function() return 2 end, { name = "metrics-fields-2", max_entries = 3 }))
    local text = metrics.render({ row })
    for field, value in pairs(row) do
      if type(value) == "number" and not SETTINGS[field] then
        assert.truthy(known[field], "stats() has a field " .. field .. " that /metrics does not export")
        assert.truthy(text:find("cache_resource_" .. field, 1, true), field)
      end
    end
  end)

  it("labels each sample with the function's name and kind (resource unless the row says data)", function()
    local m = support.parse_metrics(metrics.render({
      { name = "rows", kind = "data", hits = 4, entries = 2, bytes = 512, store_hits = 1 },
      { name = "conn", hits = 7, entries = 1 },
    }))
    assert.equal(4, m.samples['cache_resource_hits_total{function="rows",kind="data"}'])
    assert.equal(7, m.samples['cache_resource_hits_total{function="conn",kind="resource"}'])
    assert.equal(512, m.samples['cache_resource_bytes{function="rows",kind="data"}'])
    assert.equal(1, m.samples['cache_resource_store_hits_total{function="rows",kind="data"}'])
    -- a field a row does not have is not made up
    assert.is_nil(m.samples['cache_resource_bytes{function="conn",kind="resource"}'])
    assert.is_nil(m.samples['cache_resource_store_hits_total{function="conn",kind="resource"}'])
    assert.is_nil(m.type["cache_resource_misses_total"])
  end)

  it("adds up rows with the same name and kind, so no series is written twice", function()
    local m = support.parse_metrics(metrics.render({
      { name = "load", hits = 2, entries = 1 },
      { name = "load", hits = 3, entries = 0 },
      { name = "load", kind = "data", hits = 5, entries = 4 },
    }))
    assert.equal(5, m.samples['cache_resource_hits_total{function="load",kind="resource"}'])
    assert.equal(1, m.samples['cache_resource_entries{function="load",kind="resource"}'])
    assert.equal(5, m.samples['cache_resource_hits_total{function="load",kind="data"}'])
  end)

  it("escapes backslashes, quotes and line feeds in label values and replaces invalid UTF-8", function()
    assert.equal('a\\\\b\\"c\\nd', metrics.escape_label('a\\b"c\nd'))
    assert.equal("caf\195\169", metrics.escape_label("caf\195\169"))
    assert.equal("x\239\191\189y\239\191\189", metrics.escape_label("x\255y\195"))
    assert.equal("42", metrics.escape_label(42))
    local text = metrics.render({ { name = 'say "hi"\n\\', hits = 1 } })
    assert.truthy(text:find('cache_resource_hits_total{function="say \\"hi\\"\\n\\\\",kind="resource"} 1\n', 1, true))
  end)

  it("writes integers as integers, other numbers in full, infinities and NaN by name", function()
    local m = support.parse_metrics(metrics.render({
      { name = "a", entries = 3, replay_bytes = 2.5 },
      { name = "b", entries = math.huge, replay_bytes = 0 / 0 },
      { name = "c", entries = -math.huge, replay_bytes = 2.0 ^ 60 },
    }))
    assert.equal(3, m.samples['cache_resource_entries{function="a",kind="resource"}'])
    assert.equal(2.5, m.samples['cache_resource_replay_bytes{function="a",kind="resource"}'])
    assert.equal(math.huge, m.samples['cache_resource_entries{function="b",kind="resource"}'])
    local nan = m.samples['cache_resource_replay_bytes{function="b",kind="resource"}']
    assert.is_true(nan ~= nan)
    assert.equal(-math.huge, m.samples['cache_resource_entries{function="c",kind="resource"}'])
    assert.equal(2.0 ^ 60, m.samples['cache_resource_replay_bytes{function="c",kind="resource"}'])
    local text = metrics.render({ { name = "a", entries = 3 } })
    assert.truthy(text:find("} 3\n", 1, true))
  end)

  it("writes a server's sessions and its requests by status code", function()
    local m = support.parse_metrics(metrics.render({}, { sessions = 3, requests = { [404] = 2, [200] = 9 } }))
    assert.equal(3, m.samples["cache_resource_sessions"])
    assert.equal("gauge", m.type["cache_resource_sessions"])
    assert.equal(9, m.samples['cache_resource_requests_total{status="200"}'])
    assert.equal(2, m.samples['cache_resource_requests_total{status="404"}'])
    assert.equal("counter", m.type["cache_resource_requests_total"])
    local text = metrics.render({}, { sessions = 0, requests = {} })
    assert.equal(0, support.parse_metrics(text).samples["cache_resource_sessions"])
    assert.is_nil(text:find("requests_total", 1, true))
    assert.equal("", metrics.render({}))
  end)

  it("reads cache_resource.stats() when given no rows, and says its content type", function()
    local f = cr(function() return 1 end, { name = "metrics-default" })
    f(); f()
    local m = support.parse_metrics(metrics.render())
    assert.equal(cr.stats(f).hits, m.samples[series("cache_resource_hits_total", "metrics-default")])
    assert.equal("text/plain; version=0.0.4; charset=utf-8", metrics.CONTENT_TYPE)
  end)

  it_promtool("passes promtool check metrics, names and label values that need escaping included", function()
    local f = cr(function(x) return x end, { name = 'odd "name"\\ with\nlines' })
    f(1); f(1)
    cr.set_session("metrics-user")
    cr(function() return {} end, { name = "plain", scope = "session" })()
    cr.set_session(nil)
    local rows = cr.stats()
    rows[#rows + 1] = { name = "rows\255", kind = "data", hits = 1, entries = 1, bytes = 10 }
    local text = metrics.render(rows, { sessions = 2, requests = { [200] = 5, [404] = 1, [500] = 1 } })
    local ok, out = promtool(text)
    assert(ok, out)
    assert.equal("", out)
    -- and promtool does find problems: a counter without _total, no help
    local bad_ok = promtool("# TYPE cache_resource_hits counter\ncache_resource_hits 1\n")
    assert.falsy(bad_ok)
  end)
end)
