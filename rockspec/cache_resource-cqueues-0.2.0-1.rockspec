-- cache_resource with what its cqueues-based modules need: installs the
-- cache_resource rock and cqueues. It builds nothing of its own (the modules
-- are in the cache_resource rock, which does not depend on cqueues, so that
-- an app that never serves pages or runs under cqueues does not have to
-- build it).
rockspec_format = "3.0"
package = "cache_resource-cqueues"
version = "0.2.0-1"
source = {
  url = "https://github.com/cache-resource/cache_resource/archive/v0.2.0.tar.gz",
  dir = "cache_resource-0.2.0",
}
description = {
  summary = "cache_resource and cqueues: for cache_resource.server and cache_resource.cqueues",
  detailed = [[
    Installs cache_resource together with cqueues, which its web server
    (cache_resource.server, which serves an app script as a page, its HTTP
    layer cache_resource.server_http, and the command cache-resource run) and its cqueues scheduler
    (cache_resource.cqueues: waiting on condition variables, background
    refreshes in the running controller) need. LuaRocks does not see a
    cqueues that the system installed (Debian's lua-cqueues): there, install
    cache_resource, which uses it, and this rock with --deps-mode=none.
  ]],
  homepage = "https://github.com/cache-resource/cache_resource",
  issues_url = "https://github.com/cache-resource/cache_resource/issues",
  license = "MIT",
}
dependencies = {
  "lua >= 5.3, < 5.5",
  "cache_resource == 0.2.0",
  "cqueues",
}
build = {
  type = "none",
}
