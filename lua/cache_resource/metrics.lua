--- cache_resource.metrics: the caches (and a server) in the Prometheus text
-- exposition format, for a `GET /metrics` that Prometheus scrapes.
--
--     local metrics = require "cache_resource.metrics"
--     io.write(metrics.render())   -- every cached function's stats() row
--
-- What it writes (version 0.0.4 of the text format; `\n` ends every line):
--
--     exposition = { family }
--     family     = "# HELP " name " " help "\n"
--                  "# TYPE " name " " ( "counter" | "gauge" ) "\n"
--                  sample { sample }
--     sample     = name [ "{" label { "," label } "}" ] " " value "\n"
--     label      = label-name "=\"" escaped "\""
--     escaped    = the label value, UTF-8, with \ " and line feed written
--                  \\ \" \n (invalid UTF-8 bytes become U+FFFD)
--     help       = text with \ and line feed written \\ \n
--     value      = an integer, or a float ("+Inf", "-Inf", "NaN" when so)
--
-- Families, in this order, each only when it has a sample:
--
-- * per cached function, labelled `function` (the row's `name`) and `kind`
--   (the row's `kind`, `"resource"` when the row has none): the counters
--   `cache_resource_<field>_total` of the row's counting fields (`hits`,
--   `misses`...), then the gauges `cache_resource_entries`,
--   `cache_resource_bytes` (rows of `cache_data` functions) and
--   `cache_resource_replay_bytes`. Rows with the same name and kind (a
--   closure re-created with other captured values, a name given twice) are
--   added together: a family never has two samples with the same labels.
-- * for a server, when one is given: the gauge `cache_resource_sessions`
--   and the counter `cache_resource_requests_total`, labelled `status`.
local M = {}

--- The Content-Type of what `render` writes.
M.CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

-- The fields of a stats() row that count events since the function was
-- wrapped (they only grow), with what each counts.
local COUNTERS = {
  { "hits", "Calls answered from the cache." },
  { "stale_hits", "Calls answered with stale values (while a refresh runs, or after recomputing failed)." },
  { "misses", "Calls that ran the function because no entry was cached." },
  { "failures", "Computations that raised an error or returned a failure (nil, err)." },
  { "refreshes", "Background refreshes started." },
  { "refresh_failures", "Refreshes that failed (the stale entry was kept)." },
  { "evictions", "Entries evicted to stay within max_entries (or max_size)." },
  { "expirations", "Entries released because their lifetime ended." },
  { "store_hits", "Entries found in the persistent store." },
  { "store_writes", "Entries written to the persistent store." },
  { "store_errors", "Damaged store entries and failed store operations." },
  { "persist_skipped", "Entries kept in memory only because the store cannot hold them." },
}

-- The fields of a stats() row that measure what is held now.
local GAUGES = {
  { "entries", "Entries cached now (every session's, for session-scoped functions)." },
  { "bytes", "Encoded bytes of the entries in memory (cache_data functions)." },
  { "replay_bytes", "Bytes of recorded UI calls held for replay." },
}

local REPLACEMENT = "\239\191\189" -- U+FFFD, in UTF-8

-- The string with every byte that is not part of valid UTF-8 replaced.
local function valid_utf8(s)
  if utf8.len(s) then return s end
  local out, i = {}, 1
  while i <= #s do
    local n, bad = utf8.len(s, i)
    if n then
      out[#out + 1] = s:sub(i)
      break
    end
    out[#out + 1] = s:sub(i, bad - 1)
    out[#out + 1] = REPLACEMENT
    i = bad + 1
  end
  return table.concat(out)
end

local LABEL_ESCAPES = { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }

--- A label value as the text format writes it between its quotes.
-- @param value any value (converted with `tostring`)
-- @treturn string the escaped text
function M.escape_label(value)
  return (valid_utf8(tostring(value)):gsub('[\\"\n]', LABEL_ESCAPES))
end

local function escape_help(text)
  return (text:gsub("[\\\n]", LABEL_ESCAPES))
end

local function format_value(v)
  if math.type(v) == "integer" then return string.format("%d", v) end
  if v ~= v then return "NaN" end
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return string.format("%.0f", v) end
  return string.format("%.17g", v)
end

-- labels: an array of { name, value }.
local function sample(out, name, labels, value)
  local parts = {}
  for i, l in ipairs(labels) do parts[i] = l[1] .. '="' .. M.escape_label(l[2]) .. '"' end
  local set = #parts > 0 and "{" .. table.concat(parts, ",") .. "}" or ""
  out[#out + 1] = name .. set .. " " .. format_value(value) .. "\n"
end

local function header(out, name, kind, help)
  out[#out + 1] = string.format("# HELP %s %s\n# TYPE %s %s\n", name, escape_help(help), name, kind)
end

-- One group per (name, kind), in the order the rows come, each field summed
-- over the group's rows that have it.
local function group(rows)
  local groups, by_label = {}, {}
  for _, row in ipairs(rows) do
    local name, kind = tostring(row.name), tostring(row.kind or "resource")
    local id = #name .. ":" .. name .. kind
    local g = by_label[id]
    if not g then
      g = { labels = { { "function", name }, { "kind", kind } }, sums = {} }
      by_label[id] = g
      groups[#groups + 1] = g
    end
    for _, list in ipairs({ COUNTERS, GAUGES }) do
      for _, field in ipairs(list) do
        local v = row[field[1]]
        if type(v) == "number" then g.sums[field[1]] = (g.sums[field[1]] or 0) + v end
      end
    end
  end
  return groups
end

local function families(out, groups, list, kind, suffix)
  for _, field in ipairs(list) do
    local name = "cache_resource_" .. field[1] .. suffix
    local started = false
    for _, g in ipairs(groups) do
      local v = g.sums[field[1]]
      if v then
        if not started then header(out, name, kind, field[2]); started = true end
        sample(out, name, g.labels, v)
      end
    end
  end
end

--- The exposition text.
-- @tparam[opt] {table,...} rows `stats()` rows (default: `cache_resource.stats()`)
-- @tparam[opt] table server what a server reports: `sessions` (the sessions
-- alive) and `requests` (status code -> requests answered with it)
-- @treturn string the text, ending with a line feed (empty without rows and
-- server)
function M.render(rows, server)
  if rows == nil then rows = require("cache_resource").stats() end
  local out = {}
  local groups = group(rows)
  families(out, groups, COUNTERS, "counter", "_total")
  families(out, groups, GAUGES, "gauge", "")
  if server then
    header(out, "cache_resource_sessions", "gauge", "Sessions alive (one per browser).")
    sample(out, "cache_resource_sessions", {}, server.sessions or 0)
    local codes = {}
    for code in pairs(server.requests or {}) do codes[#codes + 1] = code end
    if #codes > 0 then
      table.sort(codes)
      header(out, "cache_resource_requests_total", "counter", "HTTP requests answered, by status code.")
      for _, code in ipairs(codes) do
        sample(out, "cache_resource_requests_total", { { "status", code } }, server.requests[code])
      end
    end
  end
  return table.concat(out)
end

return M
