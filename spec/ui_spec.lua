-- SPEC §6.3, §6.4, §7: the UI runtime, widgets as keys, spinner, sessions.
local cr = require "cache_resource"
local ui = require "cache_resource.ui"
local support = require "support"

local function bodies(page)
  local out = {}
  for _, el in ipairs(page:flat()) do
    out[#out + 1] = el.body or el.label or el.kind
  end
  return out
end

describe("the UI runtime (SPEC 7)", function()
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
    local kinds = {}
    for i, el in ipairs(page) do kinds[i] = el.kind end
    assert.same({ "title", "subheader", "markdown", "caption", "info", "warning", "error", "code",
      "json", "write", "divider" }, kinds)
    assert.equal('{"a": [1, 2], "b": 1}', page[9].body)
    assert.equal('a 1 {"k": true}', page[10].body)
    assert.equal("lua", page[8].language)
  end)

  it("renders text for a terminal", function()
    local page = ui.session():run(function()
      ui.header("Title"); ui.success("done"); ui.checkbox("Show", { value = true }); ui.slider("N", { min = 1, max = 9, value = 3 })
    end)
    assert.equal("## Title\n[ok] done\n[x] Show\nN: 3", page:render("text"))
  end)

  it("escapes every user string in HTML", function()
    local evil = "<script>alert('x')</script>"
    local page = ui.session():run(function()
      ui.text(evil); ui.checkbox(evil); ui.selectbox("pick", { options = { evil, "b" } })
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
    local again = s:run(function() ui.text("fine") end)
    assert.equal("fine", again[1].body)
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
  end)

  for _, mode in ipairs(support.REPLAY_MODES) do
    describe("containers, " .. mode.name, function()
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
        end
        local s = ui.session()
        local p1, p2 = s:run(script), s:run(script)
        for _, p in ipairs({ p1, p2 }) do
          assert.equal("container", p[1].kind)
          assert.equal("in block", p[1].children[1].body)
          assert.equal("after block", p[2].body)
        end
        assert.not_equal(p1[1].children, p2[1].children)
      end)

      it("a block created outside the function fails on replay with the three fixes", function()
        local function script()
          local outside = ui.container()
          local f = cr(function() outside:text("leaks"); return 1 end)
          f()
        end
        local s = ui.session()
        local p1 = s:run(script)
        assert.equal("leaks", p1[1].children[1].body)
        local p2 = s:run(script)
        local last = p2[#p2]
        assert.equal("exception", last.kind)
        assert.matches("CacheReplayClosureError", last.body)
        assert.matches("create the container inside f", last.body)
        assert.matches("move the call", last.body)
        assert.matches("stop caching f", last.body)
      end)
    end)
  end

  describe("widgets (SPEC 6.3)", function()
    it("return the session's value, changed by s:set", function()
      local s = ui.session()
      local function script() ui.text(tostring(ui.checkbox("Flag"))) end
      assert.equal("false", s:run(script)[2].body)
      s:set("Flag", true)
      assert.equal("true", s:run(script)[2].body)
    end)

    it("s:set refuses unknown widgets and bad values", function()
      local s = ui.session()
      s:run(function() ui.slider("Level", { min = 0, max = 10 }); ui.selectbox("Pick", { options = { "a", "b" } }) end)
      assert.has_error(function() s:set("Nope", 1) end)
      assert.has_error(function() s:set("Level", 11) end)
      assert.has_error(function() s:set("Pick", "c") end)
      s:set("Pick", "b")
      assert.equal("b", s:value("Pick"))
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
        local f = cr(function() runs.n = runs.n + 1; return ui.slider("K", { value = 5 }) end,
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

  describe("spinner (SPEC 2, 7)", function()
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
  end)

  describe("sessions (SPEC 6.4)", function()
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
  end)
end)
