-- make serve: the demo app (or another script) as a web page.
--   lua5.4 examples/serve.lua [script.lua]
-- Environment: CR_HOST (default 127.0.0.1), CR_PORT (8501), CR_IDLE (seconds,
-- 900), CR_MAX_SESSIONS (1000). Ctrl-C stops it and ends every session.
package.path = "lua/?.lua;examples/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath

local server = require "cache_resource.server"
local script = arg[1] or "examples/app.lua"
local dir = script:match("^(.*)/[^/]*$")
if dir then package.path = dir .. "/?.lua;" .. package.path end

server.serve {
  script = script,
  host = os.getenv("CR_HOST") or "127.0.0.1",
  port = tonumber(os.getenv("CR_PORT") or "8501"),
  idle = tonumber(os.getenv("CR_IDLE") or "900"),
  max_sessions = tonumber(os.getenv("CR_MAX_SESSIONS") or "1000"),
  title = "cache_resource demo",
}
