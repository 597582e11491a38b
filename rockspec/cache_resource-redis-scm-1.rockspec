-- The Redis store, cache_resource.redis: a store for cache_data's persist
-- option on a Redis server, shared by processes and machines. Its protocol
-- part (cache_resource.redis_resp, C) links hiredis, which the core never
-- does, and its I/O runs on cqueues sockets, so it is a rock of its own.
-- Debian/Ubuntu: libhiredis-dev and lua-cqueues; Fedora: hiredis-devel.
rockspec_format = "3.0"
package = "cache_resource-redis"
version = "scm-1"
source = {
  url = "git+https://github.com/cache-resource/cache_resource.git",
}
description = {
  summary = "A Redis store for cache_resource's cache_data: entries shared by processes and machines",
  detailed = [[
    require("cache_resource.redis").connect{ host = ..., port = ..., db = ...,
    password = ..., prefix = ..., timeout = ... } returns a store for
    cache_data's persist option: one Redis string per entry (SET ... PX),
    clears that every process sees at once (generation counters), AUTH,
    key prefixes. Inside a cqueues coroutine its I/O yields to the event
    loop; elsewhere it blocks for at most the timeout. A server that is
    down, slow or refusing returns nil and a message, never raises, and is
    tried again at most once a second. Built on hiredis's protocol code.
  ]],
  homepage = "https://github.com/cache-resource/cache_resource",
  issues_url = "https://github.com/cache-resource/cache_resource/issues",
  license = "MIT",
  labels = { "cache", "redis" },
}
dependencies = {
  "lua >= 5.3, < 5.5",
  "cache_resource",
  "cqueues",
}
external_dependencies = {
  HIREDIS = {
    header = "hiredis/hiredis.h",
    library = "hiredis",
  },
}
build = {
  type = "builtin",
  modules = {
    ["cache_resource.redis_resp"] = {
      sources = {
        "src/redis/cr_resp.c",
      },
      incdirs = { "$(HIREDIS_INCDIR)" },
      libdirs = { "$(HIREDIS_LIBDIR)" },
      libraries = { "hiredis" },
    },
    ["cache_resource.redis"] = "lua/cache_resource/redis.lua",
  },
}
