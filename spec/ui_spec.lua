-- The UI runtime (cache_resource.ui): pages, widgets as keys, layout blocks,
-- replay into blocks, spinner, sessions.
local cr = require "cache_resource"
local ui = require "cache_resource.ui"
local support = require "support"

-- The body (or label, or kind) of every element of a page, or of a list of elements.
local function bodies(page)
  local out = {}
  for _, el in ipairs(page.flat and page:flat() or page) do
    out[#out + 1] = el.body or el.label or el.kind
  end
  return out
end

local function kinds(list)
  local out = {}
  for i, el in ipairs(list) do out[i] = el.kind end
  return out
end

-- The last element of a page: where a script error shows.
local function last(page) return page[#page] end

-- Runs `script` in a new session and returns the message of the exception it
-- ended with (nil when it did not fail).
local function run_error(script)
  local page = ui.session():run(script)
  local el = last(page)
  return el and el.kind == "exception" and el.body or nil
end

describe("the UI runtime", function()
  before_each(support.reset)

  it("replays the seed's header and success on every later run", function()
    local builds = { n = 0 }
    local function script()
      local load_model = cr(function()
        ui.header("Data analysis")
        builds.n = builds.n + 1
        ui.success("Loaded model!")
        return { "model" }
      end)
      ui.title("App")
      ui.text("using " .. load_model()[1])
    end
    local s = ui.session()
    local first = s:run(script)
    local second = s:run(script)
    assert.equal(1, builds.n)
    assert.same({ "App", "Data analysis", "Loaded model!", "using model" }, bodies(first))
    assert.same(bodies(first), bodies(second))
    assert.equal("header", second[2].kind)
    assert.equal("success", second[3].kind)
  end)

  it("pages are arrays of element tables with kind and body", function()
    local page = ui.session():run(function()
      ui.title("T"); ui.subheader("S"); ui.markdown("*m*"); ui.caption("c")
      ui.info("i"); ui.warning("w"); ui.error("e"); ui.code("x = 1", "lua")
      ui.json({ b = 1, a = { 1, 2 } }); ui.write("a", 1, { k = true }); ui.divider()
    end)
    assert.same({ "title", "subheader", "markdown", "caption", "info", "warning", "error", "code",
      "json", "write", "divider" }, kinds(page))
    assert.equal('{\n  "a":[1,2],\n  "b":1\n}', page[9].body)
    assert.equal('a 1 {"k":true}', page[10].body)
    assert.equal("lua", page[8].language)
  end)

  it("writes JSON with lua-dkjson, keys sorted, whatever the table holds", function()
    assert.equal('{"a":1,"b":{"c":[1,2,3],"d":true},"z":"x"}',
      ui.to_json({ z = "x", b = { d = true, c = { 1, 2, 3 } }, a = 1 }))
    assert.equal('{"n":2}', ui.to_json({ n = 2 }))                 -- not an array of two nulls
    assert.equal('{"1":"a","3":"c"}', ui.to_json({ [1] = "a", [3] = "c" }))
    assert.equal('{}', ui.to_json({}))
    local cyclic = { name = "loop" }
    cyclic.self = cyclic
    assert.equal('{"name":"loop","self":"<cycle>"}', ui.to_json(cyclic))
    assert.matches('^%["function: ', ui.to_json({ print }))
    assert.equal("[1,null]", ui.to_json({ 1, 0 / 0 }))
    assert.equal(ui.to_json({ b = 1, a = 2 }), ui.to_json({ a = 2, b = 1 }))
  end)

  it("renders text for a terminal", function()
    local page = ui.session():run(function()
      ui.header("Title"); ui.success("done"); ui.checkbox("Show", true); ui.slider("N", 1, 9, 3)
    end)
    assert.equal("## Title\n[ok] done\n[x] Show\nN: 3", page:render("text"))
  end)

  it("escapes every user string in HTML", function()
    local evil = "<script>alert('x')</script>"
    local page = ui.session():run(function()
      ui.text(evil); ui.checkbox(evil); ui.selectbox("pick", { evil, "b" }); ui.markdown(evil)
      ui.expander(evil):text(evil); ui.sidebar:caption(evil)
    end)
    local html = page:render("html")
    assert.is_nil(html:find("<script>", 1, true))
    assert.truthy(html:find("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;", 1, true))
    assert.truthy(html:find('type="checkbox"', 1, true))
    assert.has_error(function() page:render("pdf") end)
  end)

  it("shows an error in a script as an exception element and keeps the session usable", function()
    local s = ui.session()
    local page = s:run(function() ui.text("before"); error("script broke") end)
    assert.equal("exception", page[2].kind)
    assert.matches("script broke", page[2].body)
    assert.matches("traceback", page[2].trace)
    local again = s:run(function() ui.text("fine") end)
    assert.equal("fine", again[1].body)
  end)

  it("restores the run and the session whatever the error object is", function()
    local s = ui.session("restore")
    local nasty = setmetatable({}, { __tostring = function() error("tostring exploded") end })
    cr.set_session("outer")
    local page = s:run(function()
      ui.with(ui.container(), function() error(nasty) end)
    end)
    assert.equal("exception", last(page).kind)
    assert.matches("__tostring failed", last(page).body)
    assert.matches("tostring exploded", last(page).body)
    assert.is_nil(ui.page())                    -- no run left active
    assert.equal("outer", cr.session())         -- the caller's session is back
    assert.has_error(function() ui.text("x") end)
    local bad_string = setmetatable({}, { __tostring = function() return {} end })
    page = s:run(function() error(bad_string) end)
    assert.matches("__tostring failed", last(page).body)
    assert.equal("outer", cr.session())
    assert.equal("fine", s:run(function() ui.text("fine") end)[1].body)
  end)

  it("runs a script file anew each run", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write([[
      local cr = require "cache_resource"
      local ui = require "cache_resource.ui"
      local get = cr(function() ui.info("computed"); return {} end, { name = "file-script" })
      get()
    ]])
    f:close()
    local s = ui.session()
    local p1, p2 = s:run(path), s:run(path)
    os.remove(path)
    assert.equal("computed", p1[1].body)
    assert.equal("computed", p2[1].body)
    assert.equal(1, support.stat("file-script").misses)
    assert.equal(1, support.stat("file-script").hits)
  end)

  it("ui calls outside a run raise a clear error", function()
    assert.has_error(function() ui.text("x") end)
    local ok, err = pcall(ui.slider, "x")
    assert.is_false(ok)
    assert.matches("no script is running", err)
  end)

  it("installs its hooks when a session runs, not when it is loaded", function()
    cr.set_spinner(nil)
    cr.set_widget_source(nil)
    package.loaded["cache_resource.ui"] = nil
    local fresh = require "cache_resource.ui"
    package.loaded["cache_resource.ui"] = ui
    local hook_calls = 0
    cr.set_spinner(function() hook_calls = hook_calls + 1 end)
    cr(function() return 1 end, { name = "hooks-before" })()
    assert.equal(2, hook_calls) -- loading the module left the hook alone
    local page = fresh.session():run(function() cr(function() return 2 end, { name = "hooks-after" })() end)
    assert.same({ "Running `hooks-after()`." }, page.spinners)
    assert.equal(2, hook_calls)
  end)

  -- ---------------------------------------------------------- widgets

  describe("widget signatures", function()
    local CASES = {
      { "slider, Streamlit positional", function() return ui.slider("Top words", 1, 20, 5) end, 5,
        { min_value = 1, max_value = 20, step = 1 } },
      { "slider without value", function() return ui.slider("S", 0, 10) end, 0, { max_value = 10 } },
      { "slider with defaults", function() return ui.slider("D") end, 0, { min_value = 0, max_value = 100, step = 1 } },
      { "float slider", function() return ui.slider("F", 0.0, 1.0, 0.5, 0.1) end, 0.5, { step = 0.1 } },
      { "float slider from its value", function() return ui.slider("V", { value = 0.25 }) end, 0.25,
        { min_value = 0.0, max_value = 1.0, step = 0.01 } },
      { "slider by names", function() return ui.slider("O", { min_value = 2, max_value = 4, step = 2 }) end, 2,
        { max_value = 4, step = 2 } },
      { "slider positional and opts", function() return ui.slider("P", 0, 50, 10, { key = "p", help = "pick" }) end, 10,
        { key = "p", help = "pick", id = "slider:p" } },
      { "selectbox, first option", function() return ui.selectbox("Model", { "small", "large" }) end, "small",
        { options = { "small", "large" }, index = 1 } },
      { "selectbox with a 1-based index", function() return ui.selectbox("Model", { "small", "large" }, 2) end, "large",
        { index = 2 } },
      { "selectbox index in opts", function() return ui.selectbox("P", { "a", "b" }, { index = 2 }) end, "b", {} },
      { "selectbox by names", function() return ui.selectbox("Q", { options = { 1, 2, 3 }, index = 3 }) end, 3, {} },
      { "selectbox format_func", function()
        return ui.selectbox("Fmt", { 1, 2 }, { format_func = function(o) return "#" .. o end }) end, 1,
        { labels = { "#1", "#2" } } },
      { "selectbox without options", function() return ui.selectbox("None", {}) end, nil, { options = {} } },
      { "radio", function() return ui.radio("R", { "a", "b", "c" }, 3) end, "c", { options = { "a", "b", "c" } } },
      { "radio horizontal", function() return ui.radio("H", { "x", "y" }, { horizontal = true }) end, "x",
        { horizontal = true } },
      { "checkbox on", function() return ui.checkbox("Show raw data", true) end, true, {} },
      { "checkbox off", function() return ui.checkbox("C") end, false, {} },
      { "checkbox by name", function() return ui.checkbox("N", { value = true, disabled = true }) end, true,
        { disabled = true } },
      { "toggle", function() return ui.toggle("T", true) end, true, {} },
      { "number_input, Streamlit positional", function() return ui.number_input("n", 0, 100, 10, 5) end, 10,
        { min_value = 0, max_value = 100, step = 5 } },
      { "number_input defaults", function() return ui.number_input("m") end, 0, { step = 1 } },
      { "float number_input", function() return ui.number_input("f", nil, nil, 1.5) end, 1.5, { step = 0.01 } },
      { "text_input", function() return ui.text_input("Name", "anon") end, "anon", {} },
      { "text_input default", function() return ui.text_input("Empty", { placeholder = "type" }) end, "",
        { placeholder = "type" } },
      { "button", function() return ui.button("Go", { type = "primary" }) end, false, { type = "primary" } },
      { "file_uploader", function() return ui.file_uploader("Data") end, nil, {} },
      { "camera_input", function() return ui.camera_input("Cam") end, nil, {} },
    }
    for _, case in ipairs(CASES) do
      it(case[1], function()
        local got, n
        local page = ui.session():run(function()
          local res = table.pack(case[2]())
          got, n = res[1], res.n
        end)
        assert.equal(1, n) -- a widget returns its value, and only that
        assert.equal(1, #page, page:render("text"))
        assert.equal(case[3], got)
        assert.equal(math.type(case[3]), math.type(got))
        local el = page[1]
        assert.equal(got, el.value)
        assert.equal(el.kind .. ":" .. tostring(el.key or el.label), el.id)
        for k, v in pairs(case[4]) do assert.same(v, el[k], k) end
      end)
    end
  end)

  describe("widget options", function()
    it("refuse an unknown field, naming it (v1's min/max are min_value/max_value)", function()
      local err = run_error(function() ui.slider("S", { min = 0, max = 10 }) end)
      assert.matches("cache_resource.ui.slider: unknown option 'm[ia][nx]'", err)
      assert.matches("did you mean 'm[ia][nx]_value'", err)
      assert.matches("ui_spec.lua:%d+:", err) -- points at the calling line
      assert.matches("unknown option 'valu'", run_error(function() ui.checkbox("C", { valu = true }) end))
      assert.matches("unknown option 'step'", run_error(function() ui.text_input("T", { step = 1 }) end))
      assert.matches("unknown option 'gap'", run_error(function() ui.container({ gap = "small" }) end))
    end)

    it("refuse wrong types and impossible values", function()
      local cases = {
        { function() ui.slider("S", "0", 10) end, "min_value must be a number, got \"0\"" },
        { function() ui.slider("S", 10, 0) end, "min_value 10 is greater than max_value 0" },
        { function() ui.slider("S", 0, 10, 11) end, "value 11 must lie between min_value 0 and max_value 10" },
        { function() ui.slider("S", 0, 10, 5, 0) end, "step must be greater than 0" },
        { function() ui.number_input("N", 0, 10, 5, -1) end, "step must be greater than 0" },
        { function() ui.selectbox("P", { "a", "b" }, 3) end, "index must be an integer from 1 to 2" },
        { function() ui.selectbox("P", { "a", "b" }, 0) end, "index must be an integer from 1 to 2" },
        { function() ui.selectbox("P", "a,b") end, "options must be a list" },
        { function() ui.radio("R", { "a", x = "b" }) end, "index" },
        { function() ui.checkbox("C", "yes") end, "value must be true or false" },
        { function() ui.text_input("T", 5) end, "value must be a string" },
        { function() ui.text_input("T", "long", { max_chars = 2 }) end, "longer than max_chars" },
        { function() ui.slider("S", 0, 10, 5, { value = 6 }) end, "'value' is given twice" },
        { function() ui.button("B", "x") end, "takes 0 positional parameters" },
        { function() ui.checkbox(42) end, "the label must be a string" },
        { function() ui.checkbox("C", { key = {} }) end, "key must be a string or an integer" },
        { function() ui.checkbox("C", { help = 1 }) end, "help must be a string" },
        { function() ui.toggle("C", { disabled = "no" }) end, "disabled must be a boolean" },
        { function() ui.checkbox("C", { label_visibility = "gone" }) end, "label_visibility must be" },
        { function() ui.button("B", { type = "huge" }) end, "type must be" },
      }
      for _, case in ipairs(cases) do
        local err = run_error(case[1])
        assert.is_not_nil(err, case[2])
        assert.truthy(err:find(case[2], 1, true), err .. "\n  wanted: " .. case[2])
      end
    end)
  end)

  describe("widgets", function()
    it("return the session's value, changed by s:set", function()
      local s = ui.session()
      local function script() ui.text(tostring(ui.checkbox("Flag"))) end
      assert.equal("false", s:run(script)[2].body)
      s:set("Flag", true)
      assert.equal("true", s:run(script)[2].body)
    end)

    it("two widgets with the same id in one run raise DuplicateWidgetID naming the fix", function()
      local err = run_error(function() ui.checkbox("Flag"); ui.checkbox("Flag", true) end)
      assert.matches("DuplicateWidgetID", err)
      assert.matches("checkbox:Flag", err)
      assert.matches("key", err)
      err = run_error(function() ui.slider("A", { key = "k" }); ui.slider("B", { key = "k" }) end)
      assert.matches("DuplicateWidgetID", err)
      -- different keys, or different kinds, are different widgets
      local page = ui.session():run(function()
        ui.checkbox("Flag", { key = "one" }); ui.checkbox("Flag", { key = "two" }); ui.toggle("Flag")
        ui.sidebar:checkbox("Other")
      end)
      assert.equal(3, #page)
      assert.equal(1, #page.sidebar)
      -- a cached function that shows a widget, replayed in the same run, repeats its id
      err = run_error(function()
        local f = cr(function() return ui.checkbox("Inside") end, { experimental_allow_widgets = true, name = "dup" })
        f(); f()
      end)
      assert.matches("DuplicateWidgetID", err)
      -- the next run starts a new set of ids
      local s = ui.session()
      s:run(function() ui.checkbox("Again") end)
      assert.equal("checkbox", s:run(function() ui.checkbox("Again") end)[1].kind)
    end)

    it("s:set checks type, range, step and options", function()
      local s = ui.session()
      s:run(function()
        ui.slider("Level", 0, 10, 0, 2)
        ui.slider("Ratio", 0.0, 1.0, 0.5, 0.1)
        ui.number_input("Count", nil, nil, 10, 5)
        ui.selectbox("Pick", { "a", "b" })
        ui.radio("Size", { 1, 2, 3 })
        ui.checkbox("Flag")
        ui.text_input("Name", { max_chars = 3 })
        ui.file_uploader("Upload")
      end)
      local refused = {
        { "Nope", 1, "no widget with the label or key 'Nope'" },
        { "Level", 11, "11 is outside [0, 10]" },
        { "Level", -2, "-2 is outside [0, 10]" },
        { "Level", 7, "7 is not a step of 2 from 0" },
        { "Level", 2.5, "needs a whole number" },
        { "Level", "4", "needs a number" },
        { "Level", 0 / 0, "needs a number" },
        { "Ratio", 0.35, "is not a step of 0.1" },
        { "Ratio", 1.1, "outside" },
        { "Count", 12, "12 is not a step of 5 from 10" },
        { "Pick", "c", "is not one of its options" },
        { "Size", "1", "is not one of its options" },
        { "Flag", "yes", "needs true or false" },
        { "Name", 5, "needs a string" },
        { "Name", "long", "longer than max_chars" },
        { "Upload", "file", "cannot be set" },
      }
      for _, case in ipairs(refused) do
        local ok, err = pcall(s.set, s, case[1], case[2])
        assert.is_false(ok, case[1] .. " = " .. tostring(case[2]))
        assert.truthy(err:find(case[3], 1, true), err .. "\n  wanted: " .. case[3])
      end
      s:set("Level", 6.0)
      assert.equal(6, s:value("Level"))
      assert.equal("integer", math.type(s:value("Level")))
      s:set("Ratio", 0.3)                    -- 0.3 is 3 steps of 0.1, rounding aside
      s:set("Count", -15)
      s:set("Pick", "b")
      s:set("Size", 3)
      s:set("Name", "Bo")
      assert.same({ 6, 0.3, -15, "b", 3, "Bo" },
        { s:value("Level"), s:value("Ratio"), s:value("Count"), s:value("Pick"), s:value("Size"), s:value("Name") })
      assert.equal("selectbox:Pick", s:set("selectbox:Pick", "a")) -- by id, as a browser posts
    end)

    it("a widget whose stored value no longer fits its parameters starts from its default", function()
      local s = ui.session()
      local options = { "a", "b", "c" }
      local function script() ui.text(ui.selectbox("Pick", options)) end
      s:run(script)
      s:set("Pick", "c")
      assert.equal("c", s:run(script)[2].body)
      options = { "a", "b" }
      assert.equal("a", s:run(script)[2].body)
    end)

    it("finds widgets by key, and refuses an ambiguous label", function()
      local s = ui.session()
      s:run(function() ui.slider("Size", { key = "w" }); ui.slider("Size", { key = "h" }) end)
      s:set("w", 10)
      assert.equal(10, s:value("w"))
      assert.equal(0, s:value("h"))
      s:run(function() ui.checkbox("Same", { key = 1 }); ui.toggle("Same") ; ui.checkbox("Same") end)
      assert.has_error(function() s:set("Same", true) end)
    end)

    it("a button is true for one run only", function()
      local s = ui.session()
      local function script() ui.text(tostring(ui.button("Go"))) end
      s:run(script)
      s:set("Go", true)
      assert.equal("true", s:run(script)[2].body)
      assert.equal("false", s:run(script)[2].body)
    end)

    it("with experimental_allow_widgets, widget values are part of the key", function()
      local runs = { n = 0 }
      local function script()
        local f = cr(function()
          runs.n = runs.n + 1
          local on = ui.checkbox("Pretrained")
          return on and "pretrained model" or "fresh model"
        end, { experimental_allow_widgets = true })
        ui.text(f())
      end
      local s = ui.session()
      local expect = {
        { false, 1, "fresh model" },  -- off: run
        { false, 1, "fresh model" },  -- off: hit
        { true, 2, "pretrained model" }, -- on: run
        { false, 2, "fresh model" },  -- off: hit
        { true, 2, "pretrained model" }, -- on: hit
      }
      for i, step in ipairs(expect) do
        if i > 1 then s:set("Pretrained", step[1]) end
        local page = s:run(script)
        assert.equal(step[2], runs.n, "runs after step " .. i)
        assert.equal(step[3], page[#page].body)
        assert.equal("checkbox", page[1].kind) -- replayed on hits too
        assert.equal(step[1], page[1].value)
      end
    end)

    it("cr.clear(f, args) finds the entry a call would hit, widget values included", function()
      local runs = { n = 0 }
      local f
      local function script()
        f = cr(function(x) runs.n = runs.n + 1; return x .. tostring(ui.checkbox("Deep")) end,
          { experimental_allow_widgets = true, name = "widget-clear" })
        ui.text(f("a"))
      end
      local s = ui.session()
      s:run(script); s:run(script)
      assert.equal(1, runs.n)
      assert.equal(1, support.stat("widget-clear").entries)
      s:run(function() cr.clear(f, "a") end)
      assert.equal(0, support.stat("widget-clear").entries)
      s:run(script)
      assert.equal(2, runs.n)
    end)

    it("a new session with default widget values hits the first session's entry", function()
      local runs = { n = 0 }
      local function script()
        local f = cr(function() runs.n = runs.n + 1; return ui.slider("K", 0, 10, 5) end,
          { experimental_allow_widgets = true })
        ui.text(tostring(f()))
      end
      ui.session("a"):run(script)
      ui.session("b"):run(script)
      assert.equal(1, runs.n)
    end)

    it("without the option, a widget works but is preceded by CachedWidgetWarning", function()
      local function script()
        local f = cr(function() return ui.toggle("Mode") end)
        f()
      end
      local s = ui.session()
      for _ = 1, 2 do
        local page = s:run(script)
        assert.equal("exception", page[1].kind)
        assert.matches("CachedWidgetWarning", page[1].body)
        assert.matches("experimental_allow_widgets", page[1].body)
        assert.equal("toggle", page[2].kind)
      end
    end)

    it("the CachedWidgetWarning of a widget in a block replays into that block", function()
      local function script()
        local f = cr(function() ui.sidebar:checkbox("Side"); return 1 end, { name = "warn-side" })
        f()
      end
      local s = ui.session()
      for _ = 1, 2 do
        local page = s:run(script)
        assert.same({ "exception", "checkbox" }, kinds(page.sidebar))
        assert.equal(0, #page)
      end
    end)

    it("refuses file_uploader and camera_input inside a cached function", function()
      for _, kind in ipairs({ "file_uploader", "camera_input" }) do
        local page = ui.session():run(function()
          local upload = cr(function() return ui[kind]("Data") end, { name = "upload-" .. kind })
          upload()
        end)
        assert.equal("exception", page[#page].kind)
        assert.matches("ui." .. kind .. " cannot be used inside the cached function upload%-" .. kind, page[#page].body)
      end
      -- outside a cached function they work
      local page = ui.session():run(function() ui.file_uploader("Data") end)
      assert.equal("file_uploader", page[1].kind)
    end)
  end)

  -- ------------------------------------------------------------ layout

  describe("layout blocks", function()
    local METHODS = { "title", "header", "subheader", "text", "markdown", "write", "code", "caption",
      "success", "info", "warning", "error", "exception", "json", "divider", "container", "columns",
      "expander", "empty", "checkbox", "toggle", "slider", "text_input", "number_input", "selectbox",
      "radio", "button", "file_uploader", "camera_input" }

    it("every block has every element and widget as a method", function()
      ui.session():run(function()
        local blocks = { ui.container(), ui.expander("E"), ui.empty(), ui.sidebar, (ui.columns(2)) }
        for _, b in ipairs(blocks) do
          for _, m in ipairs(METHODS) do assert.is_function(b[m], m) end
        end
      end)
    end)

    it("container: its elements are its children", function()
      local page = ui.session():run(function()
        local c = ui.container({ border = true })
        ui.text("after")
        c:text("inside")
        c:container():caption("nested")
      end)
      assert.same({ "container", "text" }, kinds(page))
      assert.is_true(page[1].border)
      assert.same({ "text", "container" }, kinds(page[1].children))
      assert.equal("nested", page[1].children[2].children[1].body)
      assert.equal("  inside\n      nested\nafter", page:render("text"))
    end)

    it("columns(n) and columns(widths) return that many blocks, side by side", function()
      local page = ui.session():run(function()
        local a, b, c = ui.columns(3)
        assert.is_not_nil(c)
        c:text("third"); a:text("first"); b:slider("In b", 0, 5, 1)
        local wide, narrow = ui.columns({ 3, 1 }, { gap = "large" })
        wide:text("wide"); narrow:text("narrow")
        assert.equal(2, select("#", ui.columns({ 1, 1 })))
      end)
      assert.same({ "columns", "columns", "columns" }, kinds(page))
      local row = page[1]
      assert.same({ "column", "column", "column" }, kinds(row.children))
      assert.equal("first", row.children[1].children[1].body)
      assert.equal("slider", row.children[2].children[1].kind)
      assert.equal("third", row.children[3].children[1].body)
      assert.equal(0.75, page[2].children[1].width)
      assert.equal(0.25, page[2].children[2].width)
      assert.equal("large", page[2].gap)
      local html = page:render("html")
      assert.truthy(html:find('<div class="cr-columns cr-gap-small">', 1, true))
      assert.truthy(html:find('<div class="cr-column" style="flex: 0.75 1 0">', 1, true))
      for _, bad in ipairs({ 0, 65, {}, { 1, -1 }, "2", 1.5 }) do
        assert.matches("cache_resource.ui.columns", run_error(function() ui.columns(bad) end))
      end
    end)

    it("expander: a labelled block, collapsed unless expanded", function()
      local page = ui.session():run(function()
        ui.expander("Details"):text("hidden at first")
        ui.expander("Open", true):text("shown")
        ui.expander("Named", { expanded = true })
      end)
      assert.same({ "expander", "expander", "expander" }, kinds(page))
      assert.equal("Details", page[1].label)
      assert.is_false(page[1].expanded)
      assert.is_true(page[2].expanded)
      assert.is_true(page[3].expanded)
      assert.equal("hidden at first", page[1].children[1].body)
      local html = page:render("html")
      assert.truthy(html:find('<details class="cr-expander"><summary>Details</summary>', 1, true))
      assert.truthy(html:find('<details class="cr-expander" open><summary>Open</summary>', 1, true))
    end)

    it("sidebar: elements and widgets go to page.sidebar", function()
      local s = ui.session()
      local function script()
        ui.title("Main")
        ui.sidebar:header("Settings")
        local n = ui.sidebar:slider("N", 1, 9, 3)
        ui.text("n = " .. n)
      end
      local page = s:run(script)
      assert.same({ "title", "text" }, kinds(page))
      assert.same({ "header", "slider" }, kinds(page.sidebar))
      assert.same({ "Settings", "N", "Main", "n = 3" }, bodies(page))
      s:set("N", 7)
      page = s:run(script)
      assert.equal("n = 7", page[2].body)
      assert.equal("[sidebar]\n  ## Settings\n  N: 7\n[main]\n# Main\nn = 7", page:render("text"))
      local html = page:render("html")
      assert.truthy(html:find('<aside class="cr-sidebar">\n<h2 class="cr-header">Settings</h2>', 1, true))
    end)

    it("empty: holds one element, replaced by each write; empty() clears it", function()
      local page = ui.session():run(function()
        local slot = ui.empty()
        slot:text("loading")
        slot:success("loaded")
        local other = ui.empty()
        other:text("temporary")
        other:empty()
      end)
      assert.same({ "empty", "empty" }, kinds(page))
      assert.same({ "success" }, kinds(page[1].children))
      assert.same({ "empty" }, kinds(page[2].children))
      assert.same({}, page[2].children[1].children)
    end)

    it("ui.with(block, fn) sends ui.* calls into the block and returns what fn returns", function()
      local page = ui.session():run(function()
        local left, right = ui.columns(2)
        local a, b = ui.with(left, function(x)
          ui.text("in left " .. x)
          ui.with(right, function() ui.text("in right") end)
          ui.text("left again")
          return x, "two"
        end, "arg")
        ui.text("main " .. a .. " " .. b)
        ui.with(ui.sidebar, function() ui.caption("side") end)
        pcall(ui.with, left, function() error("inside with") end)
        ui.text("still main")
      end)
      assert.same({ "columns", "text", "text" }, kinds(page))
      assert.same({ "in left arg", "left again" }, bodies(page[1].children[1].children))
      assert.equal("in right", page[1].children[2].children[1].body)
      assert.equal("main arg two", page[2].body)
      assert.equal("side", page.sidebar[1].body)
      assert.equal("still main", page[3].body)
      assert.matches("expected a block", run_error(function() ui.with({}, function() end) end))
      assert.matches("expected a function", run_error(function() ui.with(ui.sidebar) end))
    end)

    it("blocks from an earlier run cannot be written", function()
      local s = ui.session()
      local kept
      s:run(function() kept = ui.container() end)
      local page = s:run(function() kept:text("late") end)
      assert.matches("belongs to an earlier run", last(page).body)
    end)
  end)

  for _, mode in ipairs(support.REPLAY_MODES) do
    describe("replay into blocks, " .. mode.name, function()
      before_each(function() cr.set_replay_compile(mode.compile_after) end)

      it("calls into a block created inside the function replay into a new block", function()
        local function script()
          local f = cr(function()
            local b = ui.container()
            b:text("in block")
            ui.text("after block")
            return 1
          end)
          f()
          f()
        end
        local s = ui.session()
        local p1, p2 = s:run(script), s:run(script)
        for _, p in ipairs({ p1, p2 }) do
          assert.same({ "container", "text", "container", "text" }, kinds(p))
          assert.equal("in block", p[1].children[1].body)
          assert.equal("in block", p[3].children[1].body)
          assert.equal("after block", p[2].body)
        end
        assert.not_equal(p1[1].children, p2[1].children)
      end)

      it("columns, expanders, empties and ui.with inside a cached function replay into new blocks", function()
        local runs = { n = 0 }
        local function script()
          local f = cr(function()
            runs.n = runs.n + 1
            local l, r = ui.columns({ 2, 1 })
            l:text("left")
            ui.with(r, function()
              ui.text("right")
              ui.expander("More"):text("deep")
            end)
            local slot = ui.empty()
            slot:text("first")
            slot:text("second")
            ui.sidebar:caption("from the cache")
            return 1
          end, { name = "layout-cached" })
          f()
          ui.text("after")
        end
        local s = ui.session()
        local p1 = s:run(script)
        local p2 = s:run(script)
        assert.equal(1, runs.n)
        assert.equal(p1:render("text"), p2:render("text"))
        assert.same({ "columns", "empty", "text" }, kinds(p2))
        assert.equal("left", p2[1].children[1].children[1].body)
        assert.same({ "text", "expander" }, kinds(p2[1].children[2].children))
        assert.equal("deep", p2[1].children[2].children[2].children[1].body)
        assert.same({ "text" }, kinds(p2[2].children))
        assert.equal("second", p2[2].children[1].body)
        assert.equal("from the cache", p2.sidebar[1].body)
      end)

      it("a cached function called inside ui.with replays into the block active at replay time", function()
        local function script(where)
          local f = cr(function() ui.text("cached text"); return 1 end, { name = "with-target " .. mode.name })
          local a, b = ui.columns(2)
          ui.with(where == "a" and a or b, f)
          return a, b
        end
        local s = ui.session()
        local p1 = s:run(script, "a")
        local p2 = s:run(script, "b")
        assert.equal(1, support.stat("with-target " .. mode.name).misses)
        assert.equal(1, support.stat("with-target " .. mode.name).hits)
        assert.equal("cached text", p1[1].children[1].children[1].body)
        assert.same({}, p2[1].children[1].children)
        assert.equal("cached text", p2[1].children[2].children[1].body)
      end)

      it("a block created outside the function raises CacheReplayClosureError on every replay", function()
        local function script()
          local outside = ui.container()
          local f = cr(function() outside:text("leaks"); return 1 end)
          f()       -- computes: writes into the block
          f()       -- replays in the same run
        end
        local s = ui.session()
        local p1 = s:run(script)
        assert.equal(1, #p1[1].children) -- shown once, not twice
        assert.equal("leaks", p1[1].children[1].body)
        local p2 = s:run(script)
        for _, p in ipairs({ p1, p2 }) do
          local err = last(p)
          assert.equal("exception", err.kind)
          assert.matches("CacheReplayClosureError", err.body)
          assert.matches("create the container inside f", err.body)
          assert.matches("move the call", err.body)
          assert.matches("stop caching f", err.body)
        end
        assert.same({}, p2[1].children)
      end)

      it("the closure error also covers ui.with and columns created outside", function()
        local function script()
          local left = ui.columns(2)
          local g = cr(function() ui.with(left, function() ui.text("via with") end); return 1 end, { name = "g" })
          g()
          g()
        end
        local s = ui.session()
        for _ = 1, 2 do
          local page = s:run(script)
          assert.matches("CacheReplayClosureError: while replaying the cached function g", last(page).body)
        end
      end)

      it("a block created by the script can be written by a cached function on its first computation", function()
        local function script()
          local box = ui.container()
          local f = cr(function(x) box:text("computed " .. x); return x end, { name = "first-only" })
          f(1)
          f(2)
        end
        local page = ui.session():run(script)
        assert.same({ "computed 1", "computed 2" }, bodies(page[1].children))
      end)
    end)
  end

  -- ------------------------------------------------------------ spinner

  describe("spinner", function()
    it("is shown while the outermost miss computes and is gone from the final page", function()
      local during = {}
      local function script()
        local inner = cr(function() return 1 end, { name = "inner-spin" })
        local load = cr(function(x)
          during[#during + 1] = ui.page().transient and ui.page().transient.body
          inner()
          return x
        end)
        load(1)
      end
      local page = ui.session():run(script)
      assert.same({ "Running `load(...)`." }, during)
      assert.same({ "Running `load(...)`." }, page.spinners) -- the inner miss showed none
      for _, el in ipairs(page:flat()) do assert.not_equal("spinner", el.kind) end
      assert.is_nil(page.transient)
    end)

    it("uses the given text, no text for show_spinner = false, and shows time with show_time", function()
      local page = ui.session():run(function()
        cr(function() return 1 end, { show_spinner = "Loading the model..." })()
        cr(function() return 2 end, { show_spinner = false })()
        cr(function() return 3 end, { show_spinner = "Timed", show_time = true })()
        cr(function() return 4 end, { name = "no-args" })()
      end)
      assert.equal("Loading the model...", page.spinners[1])
      assert.matches("^Timed %(%d+%.%d+ s%)$", page.spinners[2])
      assert.equal("Running `no-args()`.", page.spinners[3])
      assert.equal(3, #page.spinners)
    end)

    it("is never recorded: a hit shows no spinner", function()
      local function script() cr(function() ui.text("x"); return 1 end, { name = "spin-hit" })() end
      local s = ui.session()
      s:run(script)
      local page = s:run(script)
      assert.same({}, page.spinners)
      assert.equal(1, #page)
    end)

    it("is reported to the session's listener, with the page so far, in the active block", function()
      local events = {}
      local s = ui.session()
      s.listener = function(event, page, spinner)
        events[#events + 1] = { event, spinner.body, #page, page:render("html", { spinner = page.transient }) }
      end
      local page = s:run(function()
        ui.title("Before")
        local col = ui.columns(2)
        ui.with(col, function()
          cr(function() ui.text("computed"); return 1 end, { show_spinner = "Working", show_time = true })()
        end)
      end)
      assert.equal(2, #events)
      assert.same({ "spinner_start", "Working", 2 }, { events[1][1], events[1][2], events[1][3] })
      assert.equal("spinner_stop", events[2][1])
      -- the spinner is drawn inside the column where the cached function was called
      assert.truthy(events[1][4]:find('<div class="cr-column" style="flex: 0.5 1 0">\n'
        .. '<div class="cr-spinner" data-show-time>', 1, true))
      assert.truthy(events[1][4]:find("Working", 1, true))
      assert.is_nil(events[2][4]:find("cr-spinner", 1, true))
      assert.is_nil(page:render("html"):find("cr-spinner", 1, true))
    end)
  end)

  -- ----------------------------------------------------------- sessions

  describe("sessions", function()
    it("session scope: each ui session has its own entries, released on close", function()
      local released = {}
      local function script()
        local client = cr(function() return { owner = cr.session() } end, { scope = "session",
          on_release = function(c) released[#released + 1] = c.owner end })
        ui.text(client().owner)
      end
      local alice, bob = ui.session("alice"), ui.session("bob")
      assert.equal("alice", alice:run(script)[1].body)
      assert.equal("bob", bob:run(script)[1].body)
      assert.equal("alice", alice:run(script)[1].body)
      alice:close()
      assert.same({ "alice" }, released)
      assert.has_error(function() alice:run(script) end)
      assert.equal("bob", bob:run(script)[1].body)
      assert.is_nil(cr.session())
    end)

    support.it_needs("<close>", "a session is a to-be-closed value: <close> ends it", function()
      local released = {}
      -- loaded from a string: Lua 5.3 cannot even parse `<close>`
      local scoped = assert(load([[
        local ui, cr, released = ...
        local session, entries_while_open
        do
          local s <close> = ui.session("scoped")
          session = s
          s:run(function()
            cr(function() return 1 end, { scope = "session", name = "scoped-client",
              on_release = function() released[#released + 1] = "scoped" end })()
          end)
          entries_while_open = cr.stats()[#cr.stats()].entries
        end
        return session, entries_while_open
      ]]))
      local session, open_entries = scoped(ui, cr, released)
      assert.equal(1, open_entries)
      assert.is_true(session.closed)
      assert.same({ "scoped" }, released)
      assert.equal(0, support.stat("scoped-client").entries)
      session:close() -- closing twice is harmless
      assert.same({ "scoped" }, released)
    end)
  end)
end)
