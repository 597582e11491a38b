-- cache_resource.server_http: the HTTP/1.x of cache_resource.server: reading
-- a request, the status line and headers of a response, and the writer of
-- a streamed body. Internal to the server.
local cqueues = require "cqueues"
local errno = require "cqueues.errno"

local M = {}

local STATUS = { [200] = "OK", [204] = "No Content", [303] = "See Other", [400] = "Bad Request",
  [404] = "Not Found", [405] = "Method Not Allowed", [408] = "Request Timeout", [410] = "Gone",
  [413] = "Payload Too Large", [431] = "Request Header Fields Too Large", [500] = "Internal Server Error" }

-- Reads one request; returns it, or nil, status, message, or nil alone
-- when no request line came before the timeout or the client's close.
function M.read_request(conn, max_body)
  local line = conn:read("*L")
  if not line then return nil end
  if line:sub(-1) ~= "\n" then return nil, 431, "request line too long" end
  local method, target, minor = line:match("^(%u+) (%S+) HTTP/1%.([01])\r?\n$")
  if not method then return nil, 400, "malformed request line" end
  local headers = {}
  for _ = 1, 100 do
    local h = conn:read("*L")
    if not h then return nil, 400, "headers cut short" end
    if h:sub(-1) ~= "\n" then return nil, 431, "header line too long" end
    if h == "\r\n" or h == "\n" then
      local body = ""
      local len = headers["content-length"]
      if len then
        len = tonumber(len:match("^%s*(%d+)%s*$"))
        if not len then return nil, 400, "bad Content-Length" end
        if len > max_body then return nil, 413, "body larger than " .. max_body .. " bytes" end
        body = len > 0 and conn:read(len) or ""
        if not body or #body ~= len then return nil, 400, "body cut short" end
      end
      return { method = method, path = target:match("^[^?]*"), version = "1." .. minor, headers = headers, body = body }
    end
    local k, v = h:match("^([%w%-]+):%s*(.-)%s*\r?\n$")
    if not k then return nil, 400, "malformed header" end
    headers[k:lower()] = v
  end
  return nil, 431, "too many headers"
end

function M.head_lines(code, headers)
  local lines = { string.format("HTTP/1.1 %d %s", code, STATUS[code] or "Status") }
  local names = {}
  for k in pairs(headers) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do lines[#lines + 1] = k .. ": " .. headers[k] end
  return lines
end

-- A writer for a streamed body: the page's parts in order, chunk-framed
-- for HTTP/1.1, to a client that may read slowly or never.
--
-- w.put(data, now, snapshot): `snapshot` marks a part that makes an earlier
-- snapshot useless (the page as it stands replaces the page as it stood).
-- `now`: the caller may not yield (the C core's spinner hook), so the
-- socket takes what it can at once and the rest waits for a later put;
-- otherwise put waits until the socket has taken everything.
--
-- What a connection holds, whatever the client does: the rest of the part
-- on the wire (`part`, from byte `pos`), then `queue`, the parts put since,
-- in order, of which only the last may be a snapshot not yet begun (a new
-- snapshot takes its place), and at most one socket buffer inside cqueues
-- (nothing is handed to the socket while cqueues still holds bytes it
-- could not write). Every byte is copied once, when its part is framed:
-- sending goes on from an offset. A client that takes nothing for
-- `timeout` seconds while bytes wait is given up: the writer is dead and
-- drops what it holds.
function M.stream_writer(conn, chunked, timeout)
  local w = { dead = false }
  local part, pos = nil, 1               -- the part on the wire, and its first byte not yet taken
  local queue, first, last = {}, 1, 0    -- waiting parts: queue[first..last], oldest first
  local last_is_snapshot = false         -- queue[last] is a snapshot not yet begun
  local progress = cqueues.monotime()    -- when the socket last took bytes, or had none to take

  local function give_up()
    w.dead = true
    part, queue, first, last = nil, {}, 1, 0
  end

  -- Hands the socket what it takes without waiting; true once it took all.
  local function push()
    if not conn:flush(0) then -- cqueues still holds bytes the kernel refused
      conn:clearerr("w")
      return false
    end
    while true do
      if not part then
        if first > last then return true end
        part, pos = queue[first], 1
        queue[first] = nil
        first = first + 1
        if first > last then last_is_snapshot = false end -- begun: no longer replaceable
      end
      local n, err = conn:send(part, pos, #part, "bn")
      if n and n > 0 then progress = cqueues.monotime() end
      pos = pos + (n or 0)
      if pos <= #part then
        if err and err ~= errno.EAGAIN then give_up() end
        return false
      end
      part = nil
    end
  end

  function w.put(data, now, snapshot)
    if w.dead then return end
    if data ~= "" then
      if chunked then data = string.format("%x\r\n", #data) .. data .. "\r\n" end
      if snapshot and last_is_snapshot then
        queue[last] = data -- replaces the earlier snapshot, which never went out
      else
        if not part and first > last then progress = cqueues.monotime() end -- nothing was waiting
        last = last + 1
        queue[last] = data
      end
      last_is_snapshot = snapshot or false
    end
    if now then
      if not push() and cqueues.monotime() - progress > timeout then give_up() end
      return
    end
    while not push() do
      if w.dead then return end
      local left = timeout - (cqueues.monotime() - progress)
      if left <= 0 then return give_up() end
      cqueues.poll({ pollfd = conn:pollfd(), events = "w" }, left)
    end
    if not conn:flush(math.max(0, timeout - (cqueues.monotime() - progress))) then give_up() end
  end

  function w.finish()
    if chunked then
      chunked = false -- the last chunk is written as it is
      w.put("0\r\n\r\n")
    else
      w.put("")
    end
  end
  return w
end

return M
