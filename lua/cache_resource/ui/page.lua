--- The page of a run, and its rendering as text and HTML.
-- (Part of `cache_resource.ui`.)
-- @module cache_resource.ui
local fmt = require "cache_resource.ui.format"
local widgets = require "cache_resource.ui.widgets"

fmt.internal_file()
local esc, fmt_number, safe_text, to_text = fmt.esc, fmt.fmt_number, fmt.safe_text, fmt.to_text
local is_widget = widgets.is_widget

local Page = {}
Page.__index = Page
Page.__name = "cache_resource.ui.page"

local TEXT_PREFIX = { title = "# ", header = "## ", subheader = "### ", success = "[ok] ",
  info = "[info] ", warning = "[warning] ", error = "[error] ", exception = "[exception] ",
  caption = "  " }

local function render_text(elements, indent, out)
  for _, el in ipairs(elements) do
    local k = el.kind
    local line
    if k == "divider" then line = "----------------------------------------"
    elseif k == "container" or k == "empty" then
      render_text(el.children, k == "container" and indent .. "  " or indent, out)
    elseif k == "columns" then
      for i, col in ipairs(el.children) do
        out[#out + 1] = string.format("%s[column %d of %d]", indent, i, #el.children)
        render_text(col.children, indent .. "  ", out)
      end
    elseif k == "expander" then
      out[#out + 1] = indent .. (el.expanded and "v " or "> ") .. el.label
      render_text(el.children, indent .. "  ", out)
    elseif k == "code" then line = "```" .. (el.language or "") .. "\n" .. el.body .. "\n```"
    elseif k == "checkbox" or k == "toggle" then line = (el.value and "[x] " or "[ ] ") .. el.label
    elseif k == "button" then line = "[ " .. el.label .. " ]"
    elseif is_widget(k) then
      line = el.label .. ": " .. (el.value == nil and "(none)" or to_text(el.value))
      if el.labels then line = line .. "  (" .. table.concat(el.labels, " | ") .. ")" end
    else line = (TEXT_PREFIX[k] or "") .. (el.body or "") end
    if line then out[#out + 1] = indent .. line:gsub("\n", "\n" .. indent) end
  end
  return out
end

-- A little Markdown, after escaping: `code`, **bold**, *italic*, [links](http...),
-- paragraphs.
local function markdown_html(src)
  local paragraphs = {}
  for para in (src .. "\n\n"):gmatch("(.-)\n%s*\n") do
    if para:find("%S") then
      local codes = {}
      local s = esc(para):gsub("`([^`]+)`", function(c)
        codes[#codes + 1] = "<code>" .. c .. "</code>"
        return "\1" .. #codes .. "\2"
      end)
      s = s:gsub("%*%*(.-)%*%*", "<strong>%1</strong>"):gsub("%*([^%*]+)%*", "<em>%1</em>")
      s = s:gsub("%[([^%]]+)%]%((https?://[^%s%)]+)%)", '<a href="%2">%1</a>')
      s = s:gsub("\n", "<br>"):gsub("\1(%d+)\2", function(i) return codes[tonumber(i)] end)
      paragraphs[#paragraphs + 1] = "<p>" .. s .. "</p>"
    end
  end
  return table.concat(paragraphs)
end

local HTML_TAG = { title = "h1", header = "h2", subheader = "h3", text = "pre", write = "p",
  caption = "p", json = "pre" }
local ALERT_ICON = { success = "&#10004;", info = "&#8505;", warning = "&#9888;", error = "&#10006;",
  exception = "&#10006;" }

local render_list

local function attr(name, v)
  if v == nil or v == false then return "" end
  if v == true then return " " .. name end
  return string.format(' %s="%s"', name, esc(type(v) == "number" and fmt_number(v) or v))
end

-- The label of a widget, with its help text as a tooltip.
local function label_html(el, for_id, tag)
  local cls = "cr-label"
  if el.label_visibility == "hidden" then cls = cls .. " cr-label-hidden"
  elseif el.label_visibility == "collapsed" then cls = cls .. " cr-label-collapsed" end
  local help = el.help and string.format(' <span class="cr-help" title="%s">?</span>', esc(el.help)) or ""
  tag = tag or "label"
  return string.format('<%s class="%s"%s>%s%s</%s>', tag, cls, for_id and attr("for", for_id) or "",
    esc(el.label), help, tag)
end

local function widget_html(el, ctx, out)
  local k = el.kind
  ctx.n = ctx.n + 1
  local dom = "cr-w" .. ctx.n
  local name, dis = esc(el.id), attr("disabled", el.disabled)
  local open = string.format('<div class="cr-widget cr-%s" data-id="%s">', k, name)
  local chosen -- the option shown as selected
  for i, o in ipairs(el.options or {}) do
    if o == el.value then chosen = i; break end
  end
  if k == "checkbox" or k == "toggle" then
    out[#out + 1] = string.format('%s<input type="hidden" name="%s" value="false"%s><label class="cr-check">'
      .. '<input type="checkbox" id="%s" name="%s" value="true" data-widget="%s"%s%s>%s<span>%s</span>%s</label></div>',
      open, name, dis, dom, name, k, el.value and " checked" or "", dis,
      k == "toggle" and '<span class="cr-switch"></span>' or "", esc(el.label),
      el.help and string.format(' <span class="cr-help" title="%s">?</span>', esc(el.help)) or "")
  elseif k == "slider" then
    -- --cr-fill: how much of the track is filled, for the styles that draw it
    local span = el.max_value - el.min_value
    local fill = span > 0 and (el.value - el.min_value) / span * 100 or 0
    out[#out + 1] = string.format('%s<div class="cr-slider-head">%s<output class="cr-value" for="%s">%s</output></div>'
      .. '<input type="range" id="%s" name="%s" data-widget="slider"%s%s%s%s style="--cr-fill: %.4g%%"%s>'
      .. '<div class="cr-slider-ends"><span>%s</span><span>%s</span></div></div>',
      open, label_html(el, dom), dom, esc(fmt_number(el.value)), dom, name, attr("min", el.min_value),
      attr("max", el.max_value), attr("step", el.step), attr("value", el.value), fill, dis,
      esc(fmt_number(el.min_value)), esc(fmt_number(el.max_value)))
  elseif k == "number_input" then
    out[#out + 1] = string.format(
      '%s%s<input type="number" id="%s" name="%s" data-widget="number_input"%s%s%s%s%s%s></div>',
      open, label_html(el, dom), dom, name, attr("min", el.min_value), attr("max", el.max_value),
      attr("step", el.step), attr("value", el.value), attr("placeholder", el.placeholder), dis)
  elseif k == "text_input" then
    out[#out + 1] = string.format('%s%s<input type="%s" id="%s" name="%s" data-widget="text_input"%s%s%s%s></div>',
      open, label_html(el, dom), el.type == "password" and "password" or "text", dom, name, attr("value", el.value),
      attr("placeholder", el.placeholder), attr("maxlength", el.max_chars), dis)
  elseif k == "selectbox" then
    local opts = {}
    for i, text in ipairs(el.labels) do
      opts[i] = string.format('<option value="%d"%s>%s</option>', i, i == chosen and " selected" or "", esc(text))
    end
    out[#out + 1] = string.format('%s%s<select id="%s" name="%s" data-widget="selectbox"%s>%s</select></div>',
      open, label_html(el, dom), dom, name, dis, table.concat(opts))
  elseif k == "radio" then
    local opts = {}
    for i, text in ipairs(el.labels) do
      opts[i] = string.format('<label class="cr-choice"><input type="radio" name="%s" value="%d"'
        .. ' data-widget="radio"%s%s><span>%s</span></label>',
        name, i, i == chosen and " checked" or "", dis, esc(text))
    end
    out[#out + 1] = string.format(
      '<fieldset class="cr-widget cr-radio%s" data-id="%s">%s<div class="cr-choices">%s</div></fieldset>',
      el.horizontal and " cr-horizontal" or "", name, label_html(el, nil, "legend"), table.concat(opts))
  elseif k == "button" then
    out[#out + 1] = string.format('%s<button type="submit" class="cr-button cr-button-%s%s" name="%s" value="true"'
      .. ' data-widget="button"%s%s>%s</button></div>',
      open, el.type or "secondary", el.use_container_width and " cr-wide" or "", name, dis,
      el.help and attr("title", el.help) or "", esc(el.label))
  else -- file_uploader, camera_input
    out[#out + 1] = string.format('%s%s<div class="cr-dropzone"><input type="file" id="%s" disabled%s>'
      .. '<small>Uploads are not taken by this server.</small></div></div>',
      open, label_html(el, dom), dom, k == "camera_input" and ' accept="image/*" capture' or "")
  end
end

local function spinner_html(sp)
  return string.format(
    '<div class="cr-spinner"%s><span class="cr-spin"></span><span class="cr-spinner-text">%s</span>%s</div>',
    sp.show_time and ' data-show-time' or "", esc(sp.body),
    sp.show_time and ' <span class="cr-elapsed">(0.0 s)</span>' or "")
end

local function element_html(el, ctx, out)
  local k = el.kind
  if k == "markdown" then
    out[#out + 1] = '<div class="cr-markdown">' .. markdown_html(el.body) .. "</div>"
  elseif HTML_TAG[k] then
    out[#out + 1] = string.format('<%s class="cr-%s">%s</%s>', HTML_TAG[k], k, esc(el.body), HTML_TAG[k])
  elseif ALERT_ICON[k] then
    local trace = el.trace
      and string.format('<details class="cr-trace"><summary>Traceback</summary><pre>%s</pre></details>', esc(el.trace))
      or ""
    out[#out + 1] = string.format('<div class="cr-alert cr-%s" role="alert"><span class="cr-icon">%s</span>'
      .. '<div class="cr-alert-body">%s%s</div></div>', k, ALERT_ICON[k], esc(el.body), trace)
  elseif k == "code" then
    out[#out + 1] = string.format('<pre class="cr-code"%s><code>%s</code></pre>', attr("data-language", el.language),
      esc(el.body))
  elseif k == "divider" then out[#out + 1] = '<hr class="cr-divider">'
  elseif k == "container" then
    out[#out + 1] = el.border and '<div class="cr-container cr-border">' or '<div class="cr-container">'
    render_list(el.children, ctx, out)
    out[#out + 1] = "</div>"
  elseif k == "empty" then
    out[#out + 1] = '<div class="cr-empty">'
    render_list(el.children, ctx, out)
    out[#out + 1] = "</div>"
  elseif k == "expander" then
    out[#out + 1] = string.format('<details class="cr-expander"%s><summary>%s</summary><div class="cr-expander-body">',
      el.expanded and " open" or "", esc(el.label))
    render_list(el.children, ctx, out)
    out[#out + 1] = "</div></details>"
  elseif k == "columns" then
    out[#out + 1] = string.format('<div class="cr-columns cr-gap-%s">', el.gap or "small")
    for _, col in ipairs(el.children) do
      out[#out + 1] = string.format('<div class="cr-column" style="flex: %s 1 0">', fmt_number(col.width))
      render_list(col.children, ctx, out)
      out[#out + 1] = "</div>"
    end
    out[#out + 1] = "</div>"
  elseif is_widget(k) then
    widget_html(el, ctx, out)
  end
end

render_list = function(list, ctx, out)
  for _, el in ipairs(list) do element_html(el, ctx, out) end
  if ctx.spinner and ctx.spinner.list == list then out[#out + 1] = spinner_html(ctx.spinner) end
end

--- The page of one run (`ui.Page`), returned by `Session:run`. It is a list
-- of the elements of the main area, in order. An element `el` is a table:
-- `el.kind` (the name of the function that added it, or `"column"`), and as
-- that kind has them `el.body` (its text), `el.label`, `el.value`, `el.id`
-- (a widget's id), `el.children` (the elements of a block) and the widget's
-- parameters.
-- @type Page

--- The elements of the sidebar, in order.
-- @tfield table sidebar

--- The texts of the spinners shown during the run, in order (with the time
-- taken, when the cached function asked for it with `show_time`).
-- @tfield {string,...} spinners

--- The spinner showing now, while a cached function computes; `nil`
-- otherwise. A table with `body` (its text) and `show_time`.
-- @tfield ?table transient

--- The page as text for a terminal, or as HTML: a sidebar, if used, and
-- the main area; every user string escaped; widgets are form controls named
-- by their id.
-- @tparam[opt="text"] string format `"text"` or `"html"`
-- @tparam[opt] table opts `spinner`: a spinner to show where it runs
-- (`page.transient`), HTML only
-- @treturn string the page
function Page:render(format, opts)
  format = format or "text"
  if format == "text" then
    if #self.sidebar == 0 then return table.concat(render_text(self, "", {}), "\n") end
    local out = { "[sidebar]" }
    render_text(self.sidebar, "  ", out)
    out[#out + 1] = "[main]"
    return table.concat(render_text(self, "", out), "\n")
  end
  if format == "html" then
    local ctx = { n = 0, spinner = opts and opts.spinner }
    local out = { '<div class="cr-page">' }
    if #self.sidebar > 0 then
      out[#out + 1] = '<aside class="cr-sidebar">'
      render_list(self.sidebar, ctx, out)
      out[#out + 1] = "</aside>"
    end
    out[#out + 1] = '<main class="cr-main">'
    render_list(self, ctx, out)
    out[#out + 1] = "</main></div>"
    return table.concat(out, "\n")
  end
  error("cache_resource.ui: page:render takes \"text\" or \"html\", got " .. safe_text(format), 2)
end

--- Every element of the page in order (the sidebar's first), blocks
-- flattened, each block element before its children.
-- @treturn {table,...} the elements
function Page:flat()
  local out = {}
  local function walk(list)
    for _, el in ipairs(list) do
      out[#out + 1] = el
      if el.children then walk(el.children) end
    end
  end
  walk(self.sidebar)
  walk(self)
  return out
end

--- The end of the class.
-- @section end

return Page
