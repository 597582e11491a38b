-- cache_resource.redis_resp: the Redis protocol for the Redis store. Commands
-- come out byte for byte as Redis reads them; replies are parsed from bytes
-- arriving in any pieces, and hostile bytes are refused with a message,
-- never a crash or an unbounded allocation.
local resp = require "cache_resource.redis_resp"

-- Every reply of `bytes`, fed in pieces of `step` bytes.
local function replies_of(bytes, step, max)
  local codec = resp.codec(max or 1 << 20)
  local out = {}
  for i = 1, #bytes, step do
    assert(codec:feed(bytes:sub(i, i + step - 1)))
    while true do
      local r, err = codec:reply()
      if r == nil then
        assert(err == nil, err)
        break
      end
      out[#out + 1] = r
    end
  end
  return out
end

describe("cache_resource.redis_resp", function()
  it("formats a command as a RESP array of bulk strings, any bytes included", function()
    local codec = resp.codec(1024)
    assert.equal("*4\r\n$3\r\nSET\r\n$3\r\nk\0y\r\n$0\r\n\r\n$2\r\n42\r\n", codec:command("SET", "k\0y", "", 42))
    local many = {}
    for i = 1, 20 do many[i] = tostring(i) end
    local bytes = codec:command("DEL", table.unpack(many))
    assert.equal("*21\r\n$3\r\nDEL\r\n$1\r\n1\r\n", bytes:sub(1, 21))
    assert.equal("$2\r\n20\r\n", bytes:sub(-8))
  end)

  it("refuses a command without a name and arguments that are not strings", function()
    local codec = resp.codec(1024)
    assert.error_matches(function() codec:command() end, "a command name expected")
    assert.error_matches(function() codec:command("GET", {}) end, "string expected, got table")
  end)

  it("parses every kind of reply into its Lua value", function()
    local bytes = "+OK\r\n$5\r\na\0b\r\n\r\n:-42\r\n$-1\r\n*-1\r\n-WRONGTYPE bad\r\n"
      .. "*3\r\n$1\r\nx\r\n$-1\r\n*1\r\n:7\r\n*0\r\n"
    local got = replies_of(bytes, #bytes)
    assert.same({ "OK", "a\0b\r\n", -42, false, false, { err = "WRONGTYPE bad" }, { "x", false, { 7 } }, {} }, got)
    assert.equal("integer", math.type(got[3]))
  end)

  it("parses the same replies from bytes arriving one at a time", function()
    local bytes = "+OK\r\n$5\r\na\0b\r\n\r\n:-42\r\n*3\r\n$1\r\nx\r\n$-1\r\n*1\r\n:7\r\n"
    assert.same(replies_of(bytes, #bytes), replies_of(bytes, 1))
  end)

  it("returns a bulk string of a megabyte byte for byte", function()
    local value = ("\0\1\2\255 abc\r\n"):rep(100000)
    assert.same({ value }, replies_of("$" .. #value .. "\r\n" .. value .. "\r\n", 4096, 2 << 20))
  end)

  it("hands a long bulk string over as its head and the rest when asked to split", function()
    local codec = resp.codec(1024)
    assert(codec:feed("*3\r\n$2\r\n12\r\n$10\r\nhead\0tail!\r\n+STATUS-LONG\r\n$5\r\nhead\0\r\n"))
    assert.same({ "12", { head = "head\0", tail = "tail!" }, "STATUS-LONG" }, codec:reply(5))
    assert.same({ head = "head\0", tail = "" }, codec:reply(5))
    assert.error_matches(function() codec:reply(-1) end, "a length >= 0 expected")
  end)

  it("returns nil while a reply is incomplete", function()
    local codec = resp.codec(1024)
    assert.is_nil(codec:reply())
    assert(codec:feed("$10\r\nabc"))
    assert.is_nil(codec:reply())
    assert(codec:feed("defghij\r\n"))
    assert.equal("abcdefghij", codec:reply())
  end)

  it("answers nil and a message for bytes that are not RESP, and stays broken", function()
    local codec = resp.codec(1024)
    assert(codec:feed("%3\r\n"))
    local r, err = codec:reply()
    assert.is_nil(r)
    assert.matches("malformed reply", err)
    assert.is_nil(codec:feed("+OK\r\n"))
    assert.is_nil((codec:reply()))
  end)

  it("answers nil and a message for lengths out of range and numbers that are not numbers", function()
    for _, bytes in ipairs({ "*-5\r\n", "*2\r\n*-7\r\n:1\r\n", "$-5\r\n", "*1\r\n$-3\r\n", ":abc\r\n",
      "$abc\r\n", "*3000000000\r\n", "$99999999999999999999\r\n" }) do
      local codec = resp.codec(1 << 20)
      assert(codec:feed(bytes))
      local r, err = codec:reply()
      assert.is_nil(r, bytes)
      assert.is_string(err, bytes)
    end
  end)

  it("refuses to buffer more than its limit", function()
    local codec = resp.codec(100)
    assert(codec:feed(("x"):rep(60)))
    local ok, err = codec:feed(("x"):rep(41))
    assert.is_nil(ok)
    assert.equal("a reply larger than 100 bytes", err)
  end)

  it("refuses an array with more elements than its limit could ever hold, before allocating it", function()
    local codec = resp.codec(3000)
    assert(codec:feed("*2147483647\r\n"))
    local r, err = codec:reply()
    assert.is_nil(r)
    assert.equal("an array reply too large for 3000 bytes", err)
    local fine = resp.codec(8000)
    assert(fine:feed("*1000\r\n" .. (":1\r\n"):rep(1000)))
    assert.equal(1000, #fine:reply())
  end)

  it("refuses a buffer limit below 64 bytes", function()
    assert.error_matches(function() resp.codec(10) end, "at least 64 bytes")
  end)
end)
