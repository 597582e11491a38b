-- Every module: the C core, cache_resource.ui (with its parts,
-- cache_resource.ui.*), cache_resource.metrics, and the modules built on
-- cqueues (cache_resource.server, cache_resource.cqueues) with the command
-- cache-resource, which need lua-cqueues only when they run (without it the
-- server says how to install it). cqueues is not a dependency here, so that
-- the core installs without it (and, from a source rock, without a network)
-- and uses a cqueues from the system (Debian's lua-cqueues), which LuaRocks
-- does not see; the rock cache_resource-cqueues adds that dependency.
rockspec_format = "3.0"
package = "cache_resource"
version = "scm-1"
source = {
  url = "git+https://github.com/cache-resource/cache_resource.git",
}
description = {
  summary = "Streamlit's st.cache_resource for Lua: shared resources cached by argument value, with UI replay",
  detailed = [[
    cache_resource(fn, opts) returns a cached function: the first call with
    some arguments runs fn, later calls with equal arguments (keyed by value,
    hashed with xxHash) return the same objects. TTL, LRU eviction, validate,
    on_release, refresh in the background, per-session scope, yield-safe
    under coroutine schedulers; UI calls made while computing are replayed on
    every hit. For Lua 5.3 and 5.4.
  ]],
  homepage = "https://github.com/cache-resource/cache_resource",
  issues_url = "https://github.com/cache-resource/cache_resource/issues",
  license = "MIT",
  labels = { "cache", "memoization", "streamlit" },
}
dependencies = {
  "lua >= 5.3, < 5.5",
}
-- Only the header: xxHash is compiled into the module (XXH_INLINE_ALL), so
-- nothing links libxxhash. Debian/Ubuntu: libxxhash-dev; Fedora: xxhash-devel.
external_dependencies = {
  XXHASH = {
    header = "xxhash.h",
  },
}
build = {
  type = "builtin",
  modules = {
    cache_resource = {
      sources = {
        "src/cache_resource.c",
        "src/cr_base.c",
        "src/cr_buffer.c",
        "src/cr_call.c",
        "src/cr_codec.c",
        "src/cr_compile.c",
        "src/cr_data.c",
        "src/cr_front.c",
        "src/cr_key.c",
        "src/cr_manage.c",
        "src/cr_options.c",
        "src/cr_persist.c",
        "src/cr_refresh.c",
        "src/cr_replay.c",
        "src/cr_sched.c",
        "src/cr_store.c",
        "src/cr_ui.c",
      },
      incdirs = { "$(XXHASH_INCDIR)" },
    },
    ["cache_resource.cli"] = "lua/cache_resource/cli.lua",
    ["cache_resource.cqueues"] = "lua/cache_resource/cqueues.lua",
    ["cache_resource.data"] = "lua/cache_resource/data.lua",
    ["cache_resource.persist"] = "lua/cache_resource/persist.lua",
    ["cache_resource.metrics"] = "lua/cache_resource/metrics.lua",
    ["cache_resource.server"] = "lua/cache_resource/server.lua",
    ["cache_resource.server_assets"] = "lua/cache_resource/server_assets.lua",
    ["cache_resource.server_http"] = "lua/cache_resource/server_http.lua",
    ["cache_resource.ui"] = "lua/cache_resource/ui.lua",
    ["cache_resource.ui.elements"] = "lua/cache_resource/ui/elements.lua",
    ["cache_resource.ui.format"] = "lua/cache_resource/ui/format.lua",
    ["cache_resource.ui.layout"] = "lua/cache_resource/ui/layout.lua",
    ["cache_resource.ui.model"] = "lua/cache_resource/ui/model.lua",
    ["cache_resource.ui.page"] = "lua/cache_resource/ui/page.lua",
    ["cache_resource.ui.session"] = "lua/cache_resource/ui/session.lua",
    ["cache_resource.ui.widgets"] = "lua/cache_resource/ui/widgets.lua",
  },
  -- The command `cache-resource run app.lua`. LuaRocks installs a wrapper
  -- that runs it with the Lua the rock was built for, with the tree's
  -- modules on its paths.
  install = {
    bin = {
      ["cache-resource"] = "bin/cache-resource",
    },
  },
}
-- `luarocks test` in a checkout: builds the module for the Lua that
-- luarocks runs (--lua-version) and runs the spec suite with busted, which
-- is taken from the system (Debian: lua-busted), so nothing is downloaded.
test = {
  type = "command",
  script = "rockspec/test.lua",
}
