-- cache_resource.ui.elements: the elements that show text (ui.title,
-- ui.write, ui.code...). Internal: `cache_resource.ui` makes them
-- replayable and documents them.
local fmt = require "cache_resource.ui.format"
local model = require "cache_resource.ui.model"

fmt.internal_file()
local append, to_text = model.append, fmt.to_text

local M = {}

-- The elements that show one text, `body`.
local ELEMENTS = { "title", "header", "subheader", "text", "markdown", "caption", "success",
  "info", "warning", "error" }
M.ELEMENTS = ELEMENTS

-- The functions that do the work, by kind: each adds its element to the
-- active block of the run in progress.
local raw = {}
M.raw = raw

for _, kind in ipairs(ELEMENTS) do
  raw[kind] = function(body) append { kind = kind, body = to_text(body) } end
end

function raw.write(...)
  local parts = table.pack(...)
  for i = 1, parts.n do parts[i] = to_text(parts[i]) end
  append { kind = "write", body = table.concat(parts, " ", 1, parts.n) }
end

function raw.code(body, language)
  append { kind = "code", body = to_text(body), language = language ~= nil and to_text(language) or nil }
end

function raw.exception(err)
  append { kind = "exception", body = to_text(err) }
end

function raw.json(value)
  append { kind = "json", body = fmt.to_json(value, true) }
end

function raw.divider()
  append { kind = "divider" }
end

return M
