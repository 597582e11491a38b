rockspec_format = "3.0"
package = "cache_resource"
version = "scm-1"
source = {
  url = "git+file:///work/main",
}
description = {
  summary = "Streamlit's st.cache_resource for Lua 5.4: shared resources cached by argument value, with UI replay",
  detailed = [[
    cache_resource(fn, opts) returns a cached function: the first call with some
    arguments runs fn, later calls with equal arguments (hashed by value with
    xxHash) return the same objects. TTL, LRU eviction, validate, on_release,
    clearing, per-session scope, yield-safe under coroutine schedulers.
  ]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
external_dependencies = {
  XXHASH = {
    header = "xxhash.h",
    library = "xxhash",
  },
}
build = {
  type = "builtin",
  modules = {
    cache_resource = {
      sources = {
        "src/cache_resource.c",
        "src/cr_buffer.c",
        "src/cr_call.c",
        "src/cr_compile.c",
        "src/cr_key.c",
        "src/cr_manage.c",
        "src/cr_options.c",
        "src/cr_refresh.c",
        "src/cr_replay.c",
        "src/cr_sched.c",
        "src/cr_store.c",
      },
      incdirs = { "$(XXHASH_INCDIR)" },
      libdirs = { "$(XXHASH_LIBDIR)" },
      libraries = { "xxhash" },
    },
    ["cache_resource.cqueues"] = "lua/cache_resource/cqueues.lua",
    ["cache_resource.server"] = "lua/cache_resource/server.lua",
    ["cache_resource.ui"] = "lua/cache_resource/ui.lua",
  },
}
