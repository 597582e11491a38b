-- cache_resource.sqlite, the default store of cache_data (persist = true):
-- entries in one SQLite database shared by the processes of a machine. A
-- rock of its own because it links libsqlite3, and the core links nothing.
rockspec_format = "3.0"
package = "cache_resource-sqlite"
version = "0.2.0-1"
source = {
  url = "https://github.com/cache-resource/cache_resource/archive/v0.2.0.tar.gz",
  dir = "cache_resource-0.2.0",
}
description = {
  summary = "cache_resource.sqlite: cache_data entries that survive restarts, shared by a machine's processes",
  detailed = [[
    The default store of cache_data's persist option: one SQLite database
    (WAL mode, one transaction per write, a busy timeout, private files)
    that several processes use at once, with expiry in wall-clock time and
    least-recently-used bounds per function. A damaged file is emptied and
    used again. For Lua 5.3 and 5.4.
  ]],
  homepage = "https://github.com/cache-resource/cache_resource",
  issues_url = "https://github.com/cache-resource/cache_resource/issues",
  license = "MIT",
  labels = { "cache", "sqlite", "streamlit" },
}
dependencies = {
  "lua >= 5.3, < 5.5",
  "cache_resource == 0.2.0",
}
-- SQLite 3.24 or later. Debian/Ubuntu: libsqlite3-dev; Fedora: sqlite-devel.
external_dependencies = {
  SQLITE = {
    header = "sqlite3.h",
    library = "sqlite3",
  },
}
build = {
  type = "builtin",
  modules = {
    ["cache_resource.sqlite"] = {
      sources = {
        "src/sqlite/db.c",
        "src/sqlite/files.c",
        "src/sqlite/module.c",
      },
      libraries = { "sqlite3" },
      incdirs = { "$(SQLITE_INCDIR)" },
      libdirs = { "$(SQLITE_LIBDIR)" },
    },
  },
}
