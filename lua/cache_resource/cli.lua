--- cache_resource.cli: the `cache-resource` command, which the rock installs.
--
--     cache-resource run app.lua --port 8501
--
-- serves the app (a script re-run for every page view, see
-- `cache_resource.server`) and prints its URL on stdout; `--help` says the
-- rest. The command itself is a thin script (bin/cache-resource) that
-- calls `main`.
--
-- Command lines it takes:
--
--     command = "--help" | "-h" | "--version"
--             | "run" app { option } [ "--help" | "-h" ]
--     option  = ( "--host" | "--port" | "--idle" | "--max-sessions" )
--               ( " " value | "=" value )
local cr = require "cache_resource"

local M = {}

--- What `--help` prints.
M.USAGE = [[
Usage: cache-resource run APP.lua [--host H] [--port N] [--idle S] [--max-sessions N]
       cache-resource --help | --version

Serves APP.lua as a web page, like `streamlit run`: the app is a Lua script
(using cache_resource.ui) that is run again from the top for every page view
and widget change, in the browser's session. Prints the page's URL on stdout;
a log line per request goes to stderr, and so do warnings (a failing
background refresh or on_release, a failing store), one line each. Modules
next to APP.lua can be required by it. Ctrl-C (SIGINT) or SIGTERM stops it
and ends every session.

Options:
  --host H          address to listen on (default 127.0.0.1, this machine
                    only; 0.0.0.0 listens on every interface)
  --port N          port (default 8501; 0 picks a free one)
  --idle S          seconds of inactivity after which a session ends,
                    releasing its session-scoped entries (default 900)
  --max-sessions N  sessions alive at most; past it the least recently used
                    idle one ends (default 1000)
  -h, --help        this text
  --version         the version

Exit status: 0 once stopped by a signal; 1 when it cannot serve (the port is
taken, lua-cqueues is not installed); 2 for a wrong command line, or an app
file that is missing or does not compile.
]]

-- The options of `run`: the server option each sets, and its check (a
-- converted value, or nil and what it takes).
local OPTIONS = {
  ["--host"] = { "host", function(v) if v ~= "" then return v end return nil, "an address" end },
  ["--port"] = { "port", function(v)
    local n = math.tointeger(tonumber(v))
    if n and n >= 0 and n <= 65535 then return n end
    return nil, "a port number from 0 to 65535"
  end },
  ["--idle"] = { "idle", function(v)
    local n = tonumber(v)
    if n and n > 0 and n < math.huge then return n end
    return nil, "a number of seconds > 0"
  end },
  ["--max-sessions"] = { "max_sessions", function(v)
    local n = math.tointeger(tonumber(v))
    if n and n >= 1 then return n end
    return nil, "an integer >= 1"
  end },
}

--- Reads a command line.
-- @tparam {string,...} argv the arguments (after the command's name)
-- @treturn ?table `{ action = "help" | "version" }`, or `{ action = "run",
-- app = path, options = { host =, port =, idle =, max_sessions = } }` (only
-- the options given)
-- @treturn ?string else what is wrong, for the user
function M.parse(argv)
  local first = argv[1]
  if first == nil then return nil, "no command: cache-resource run APP.lua" end
  if first == "--help" or first == "-h" then return { action = "help" } end
  if first == "--version" then return { action = "version" } end
  if first ~= "run" then
    return nil, string.format("unknown command '%s': the command is run (cache-resource run APP.lua)", first)
  end
  local app, options = nil, {}
  local i = 2
  while argv[i] ~= nil do
    local a = argv[i]
    if a == "--help" or a == "-h" then return { action = "help" } end
    local name, value = a:match("^(%-%-[^=]+)=(.*)$")
    name = name or a
    if name:sub(1, 1) == "-" then
      local option = OPTIONS[name]
      if not option then return nil, string.format("unknown option '%s' (see cache-resource --help)", name) end
      if value == nil then
        i = i + 1
        value = argv[i]
        if value == nil then return nil, name .. " needs a value" end
      end
      local converted, takes = option[2](value)
      if converted == nil then return nil, string.format("%s takes %s, got '%s'", name, takes, value) end
      options[option[1]] = converted
    elseif app == nil then
      app = a
    else
      return nil, string.format("one app at a time: '%s' after '%s'", a, app)
    end
    i = i + 1
  end
  if app == nil then return nil, "which app? cache-resource run APP.lua" end
  return { action = "run", app = app, options = options }
end

-- The directory of a path, for package.path ("." for a bare file name).
local function dir_of(path)
  return path:match("^(.*)/[^/]*$") or "."
end

--- Runs the command.
-- @tparam {string,...} argv the arguments (after the command's name)
-- @tparam[opt] table streams `out` and `err`, each with a `write` method
-- (default `io.stdout` and `io.stderr`)
-- @treturn integer the exit status
function M.main(argv, streams)
  local out = streams and streams.out or io.stdout
  local err = streams and streams.err or io.stderr
  local function fail(status, message)
    err:write("cache-resource: ", message, "\n")
    return status
  end
  local cmd, problem = M.parse(argv)
  if not cmd then return fail(2, problem) end
  if cmd.action == "help" then
    out:write(M.USAGE)
    return 0
  elseif cmd.action == "version" then
    out:write("cache-resource ", cr._VERSION, " (", _VERSION, ")\n")
    return 0
  end
  -- The app is loaded again for every page view; loading it now turns a
  -- missing file or a syntax error into an error at start.
  local chunk, why = loadfile(cmd.app)
  if not chunk then return fail(2, "the app does not load: " .. why) end
  local found, server = pcall(require, "cache_resource.server")
  if not found then return fail(1, tostring(server)) end
  local dir = dir_of(cmd.app)
  package.path = dir .. "/?.lua;" .. dir .. "/?/init.lua;" .. package.path
  local opts = { script = cmd.app }
  for k, v in pairs(cmd.options) do opts[k] = v end
  opts.ready = function(srv)
    out:write(srv.url, "\n")
    if out.flush then out:flush() end
  end
  local served, failure = pcall(server.serve, opts)
  -- (without the position of the code that raised it: the user did not write it)
  if not served then return fail(1, (tostring(failure):gsub("^[^\n:]*%.lua:%d+: ", ""))) end
  return 0
end

return M
