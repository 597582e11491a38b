-- luacheck configuration: `make lint-lua` (Debian package lua-check).
--
-- Scripts, specs, examples and benchmarks are Lua 5.4. The modules in lua/
-- also run on Lua 5.3, so they are checked against 5.3's standard library:
-- a use of what only 5.4 has (warn, coroutine.close) is reported there.
-- Code that feature-tests such a function reads it with rawget, e.g.
-- `local warn = rawget(_G, "warn")`, which is both portable and quiet.
std = "lua54"
max_line_length = 120
codes = true
-- A leading underscore is cache_resource's convention for "leave this
-- parameter out of the cache key" (`function(conn, _retries)`), and such
-- parameters are used: W214 (used variable with unused hint) does not apply.
ignore = { "214" }

files["lua/"] = { std = "lua53" }

-- Functions in specs often take parameters they ignore: a cached function's
-- parameter list, a hash function's argument. Those are not reported there.
files["spec/"] = { std = "+busted", unused_args = false }
-- support.capture_warnings replaces warn() while a spec runs.
files["spec/support.lua"] = { globals = { "warn" } }

-- The libFuzzer host calls fuzz_one, a global, for every input.
files["fuzz/fuzz_keys.lua"] = { globals = { "fuzz_one" } }
files["fuzz/fuzz_codec.lua"] = { globals = { "fuzz_one" } }

exclude_files = { "build/", "build53/", "build-asan/", "dist/", "docs/" }
