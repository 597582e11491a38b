-- The value codec behind cache_data copies and recorded UI arguments,
-- through its internal test hooks (cache_resource.data._internal: not part
-- of the API). What cache_data users see of it is in data_spec.lua.
local cr = require "cache_resource"
local support = require "support"
local codec = cr.data._internal

local function bits(x) return string.pack("<d", x) end

local function encode(...) return codec.encode("memory", ...) end

local function round_trip(...)
  local bytes, metas = encode(...)
  return table.pack(codec.decode("memory", bytes, metas))
end

local function varint(n)
  local out = {}
  repeat
    local b = n % 128
    n = n // 128
    out[#out + 1] = string.char(b + (n > 0 and 128 or 0))
  until n == 0
  return table.concat(out)
end

-- An encoding written by hand: version 1, metatables by index.
local function header(nvalues, ntables, nstrings, body)
  return "\1\0" .. varint(nvalues) .. varint(ntables) .. varint(nstrings) .. varint(#body) .. body
end

local function refused(mode, bytes, metas)
  local ok, err = pcall(codec.decode, mode, bytes, metas)
  assert.is_false(ok, "bytes were decoded")
  assert.matches("damaged: ", tostring(err), 1, true)
  return err
end

describe("the value codec", function()
  describe("copies values exactly", function()
    it("keeps integer and float subtypes and every float bit", function()
      local nan_payload = string.unpack("<d", "\1\0\0\0\0\0\xf8\x7f")
      local values = { 1, 1.0, -0.0, 0.0, 1 / 0, -1 / 0, 0 / 0, -(0 / 0), nan_payload, math.maxinteger,
        math.mininteger, 2 ^ -1074, -3, 2 ^ 63 }
      local copy = round_trip(table.unpack(values))
      assert.equals(#values, copy.n)
      for i, v in ipairs(values) do
        assert.equals(math.type(v), math.type(copy[i]), "value " .. i)
        assert.equals(bits(v), bits(copy[i]), "value " .. i)
      end
    end)

    it("keeps strings byte for byte, NULs included, and long strings", function()
      local long = string.rep("\0\1\255x", 1000)
      local copy = round_trip("", "a\0b", long, "\0")
      assert.same({ "", "a\0b", long, "\0", n = 4 }, copy)
    end)

    it("keeps nils and the number of values", function()
      local copy = round_trip(nil, false, nil)
      assert.equals(3, copy.n)
      assert.is_nil(copy[1])
      assert.is_false(copy[2])
      assert.equals(0, round_trip().n)
    end)

    it("copies tables deeply, keys included, into new tables", function()
      local key = { "k" }
      local t = { 1, 2, { 3, { x = "y" } }, [10] = "ten", [1.5] = "float", [true] = "yes", [key] = { "v" } }
      local c = round_trip(t)[1]
      assert.are_not.equal(t, c)
      assert.are_not.equal(t[3], c[3])
      assert.same(t[3], c[3])
      assert.equals("ten", c[10])
      assert.equals("float", c[1.5])
      assert.equals("yes", c[true])
      local ck, cv = next(c, nil)
      while type(ck) ~= "table" do ck, cv = next(c, ck) end
      assert.are_not.equal(key, ck)
      assert.same({ "k" }, ck)
      assert.same({ "v" }, cv)
    end)

    it("keeps the sharing graph of the whole value list: a table reached twice is one table", function()
      local shared = { "s" }
      local t = { a = shared, b = shared, [shared] = shared }
      local c = round_trip(t, shared)
      assert.equals(c[1].a, c[1].b)
      assert.equals(c[1].a, c[2])
      assert.equals(c[2], c[1][c[2]])
      assert.are_not.equal(shared, c[2])
    end)

    it("closes cycles on the copy", function()
      local t = { name = "root" }
      t.self = t
      t.child = { parent = t }
      t.child.child = t.child
      local c = round_trip(t)[1]
      assert.equals(c, c.self)
      assert.equals(c, c.child.parent)
      assert.equals(c.child, c.child.child)
      assert.are_not.equal(t, c)
    end)

    it("gives copies the same metatable, not a copy of it", function()
      local Point = { __index = { norm = function(p) return p.x + p.y end } }
      local locked = { __metatable = "locked" }
      local p = setmetatable({ x = 1, y = 2 }, Point)
      local c = round_trip(p, setmetatable({}, locked), setmetatable({}, Point))
      assert.equals(Point, getmetatable(c[1]))
      assert.equals(3, c[1]:norm())
      assert.equals(locked, debug.getmetatable(c[2]))
      assert.equals(Point, getmetatable(c[3]))
    end)

    it("reads raw contents: no metamethod runs while encoding", function()
      local function boom() error("a metamethod ran") end
      local mt = { __index = boom, __newindex = boom, __pairs = boom, __len = boom, __eq = boom, __call = boom }
      local t = setmetatable({ 1, 2, x = "raw" }, mt)
      local c = round_trip(t)[1]
      assert.equals("raw", rawget(c, "x"))
      assert.equals(2, rawlen(c))
      assert.equals(mt, getmetatable(c))
    end)

    it("keeps array holes and integer keys past them", function()
      local c = round_trip({ 1, nil, 3, [100] = 100, [0] = 0, [-1] = -1 })[1]
      assert.equals(1, c[1])
      assert.is_nil(c[2])
      assert.equals(3, c[3])
      assert.equals(100, c[100])
      assert.equals(0, c[0])
      assert.equals(-1, c[-1])
    end)

    it("names metatables by their registered name in bytes meant to leave the process", function()
      local Vec = { __name = "Vec" }
      cr.data.register_metatable("codec_spec.Vec", Vec)
      local v = setmetatable({ 1, 2 }, Vec)
      local bytes = codec.encode("named", v, v)
      local c = table.pack(codec.decode("named", bytes))
      assert.equals(Vec, getmetatable(c[1]))
      assert.equals(c[1], c[2])
      assert.matches("codec_spec.Vec", bytes, 1, true)
    end)

    it("copies recorded UI arguments one value at a time, refusing tables with metatables", function()
      local t = { "a", { b = true } }
      t[2].up = t
      local c = codec.decode("plain", codec.encode("plain", t))
      assert.equals(c, c[2].up)
      assert.is_nil(codec.encode("plain", setmetatable({}, {})))
      assert.is_nil(codec.encode("plain", { print }))
    end)
  end)

  describe("names the path of a value it cannot copy", function()
    local function message(...)
      local ok, err = pcall(encode, ...)
      assert.is_false(ok)
      return (tostring(err):gsub("^.-cache_data: cannot copy: ", ""))
    end

    it("for values by field, index and key of any type", function()
      assert.equals("result[2].conn is a userdata 'FILE*'", message(1, { conn = io.stdout }))
      assert.equals("result[1] is a function", message(print))
      assert.equals("result[1][3] is a thread", message({ 1, 2, coroutine.create(print) }))
      assert.equals('result[1]["any string"] is a function', message({ ["any string"] = print }))
      assert.equals('result[1]["end"] is a function', message({ ["end"] = print }))
      assert.equals("result[1][1.5][true].x is a function", message({ [1.5] = { [true] = { x = print } } }))
      assert.equals('result[1]["a\\0b"] is a function', message({ ["a\0b"] = print }))
    end)

    it("for a bad key, and for what a table key holds", function()
      assert.equals("a key in result[1].index is a function", message({ index = { [print] = 1 } }))
      assert.equals("a key in result[1].index is a table whose .f is a function",
        message({ index = { [{ f = print }] = 1 } }))
      assert.equals("a key in result[1] is a table whose key is a function", message({ [{ [print] = 1 }] = 1 }))
    end)

    it("for nesting deeper than 100 levels, and accepts 100", function()
      local function nest(levels)
        local root = {}
        local t = root
        for _ = 2, levels do
          t.down = {}
          t = t.down
        end
        return root
      end
      assert.equals("result[1] nests deeper than 100 levels", message(nest(101)))
      assert.truthy(encode(nest(100)))
      local cycle = nest(100)
      cycle.down.down.down = cycle -- a cycle is not depth
      assert.truthy(encode(cycle))
    end)

    it("for a metatable without a registered name when the bytes leave the process", function()
      local ok, err = pcall(codec.encode, "named", { p = setmetatable({}, { __name = "Unregistered" }) })
      assert.is_false(ok)
      assert.matches("result[1].p is a table 'Unregistered' whose metatable is not registered", err, 1, true)
    end)
  end)

  describe("refuses damaged bytes without crashing", function()
    local value = { 1, -2.5, "x\0y", n = { deep = { true } }, [false] = "no" }
    value.self = value
    value.shared, value.again = value.n, value.n
    local mt = { __name = "M" }
    local bytes, metas = encode(value, setmetatable({ "with a metatable" }, mt), "x\0y", nil)

    it("cut short at every length", function()
      for len = 0, #bytes - 1 do refused("memory", bytes:sub(1, len), metas) end
    end)

    it("extended by any byte", function()
      for b = 0, 255 do refused("memory", bytes .. string.char(b), metas) end
    end)

    it("with any byte changed to any value: refused, or decoded to plain values", function()
      local decoded = 0
      for at = 1, #bytes do
        for delta = 1, 255 do
          local damaged = bytes:sub(1, at - 1) .. string.char((bytes:byte(at) + delta) % 256) .. bytes:sub(at + 1)
          local ok, err = pcall(codec.decode, "memory", damaged, metas)
          if ok then decoded = decoded + 1 else assert.matches("damaged: ", err, 1, true) end
        end
      end
      -- a changed byte inside a string or a number still decodes: to other data
      assert.is_true(decoded > 0)
    end)

    it("made of random bytes, in every mode, allocating no more than the bytes allow", function()
      local seed = 12345
      local function random(n) -- a fixed sequence: the same buffers every run
        seed = (seed * 1103515245 + 12345) % 2147483648
        return seed % n
      end
      for _ = 1, 3000 do
        local len = random(64)
        local t = { string.char(1, random(2)) } -- a valid start now and then
        for i = 2, len do t[i] = string.char(random(256)) end
        local s = table.concat(t)
        for _, mode in ipairs({ "memory", "named", "plain" }) do
          collectgarbage("stop")
          local before = collectgarbage("count")
          pcall(codec.decode, mode, s, metas)
          local grew = (collectgarbage("count") - before) * 1024
          collectgarbage("restart")
          assert.is_true(grew < 96 * #s + 16384, string.format("%d bytes allocated %d", #s, grew))
        end
      end
    end)

    it("that claim more than they hold", function()
      local TABLE, STR, TABLE_REF, STR_REF, TABLE_MT = "\9", "\6", "\13", "\8", "\11"
      -- a table claiming 2^60 elements
      refused("memory", header(1, 0, 0, TABLE .. "\x80\x80\x80\x80\x80\x80\x80\x80\x10\0"))
      -- a string longer than the bytes
      refused("memory", header(1, 0, 0, STR .. "\x7f" .. "abc"))
      -- a reference to a table or string not decoded yet
      refused("memory", header(1, 1, 0, TABLE_REF .. "\0"))
      refused("memory", header(1, 0, 1, STR_REF .. "\0"))
      -- a metatable past the list, and one where there is no list
      refused("memory", header(1, 0, 0, TABLE_MT .. "\0\0\5"), { {} })
      refused("memory", header(1, 0, 0, TABLE_MT .. "\0\0\0"))
      -- a nil key, a NaN key, a nil in the array part
      refused("memory", header(1, 0, 0, TABLE .. "\0\1\1\3"))
      refused("memory", header(1, 0, 0, TABLE .. "\0\1\5\0\0\0\0\0\0\xf8\x7f\3"))
      refused("memory", header(1, 0, 0, TABLE .. "\1\0\1"))
      -- more values than the body holds, counts that do not match it
      refused("memory", header(9, 0, 0, "\3"))
      refused("memory", header(1, 1, 0, "\3"))
      -- an unknown tag, another version, bytes made for the other mode
      refused("memory", header(1, 0, 0, "\31"))
      refused("memory", "\2" .. header(1, 0, 0, "\3"):sub(2))
      refused("named", header(1, 0, 0, "\3"))
      -- a varint past 64 bits
      refused("memory", header(1, 0, 0, "\4\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f"))
    end)

    it("nested deeper than 100 levels", function()
      refused("memory", header(1, 0, 0, string.rep("\9\1\0", 101) .. "\3"))
      assert.is_true(codec.decode("memory", header(1, 0, 0, string.rep("\9\1\0", 100) .. "\3")) ~= nil)
    end)

    it("naming a metatable this process has not registered", function()
      local Gone = {}
      cr.data.register_metatable("codec_spec.Gone", Gone)
      local named = codec.encode("named", setmetatable({}, Gone))
      local foreign = named:gsub("codec_spec%.Gone", "codec_spec.Lost")
      local err = refused("named", foreign)
      assert.matches("not registered", err, 1, true)
    end)
  end)

  it("survives finalizers that use the codec while it decodes", function()
    local rows = {}
    for i = 1, 2000 do rows[i] = { id = i, name = "row" .. i } end
    local bytes, metas = encode(rows)
    local inner = 0
    local function arm()
      setmetatable({}, { __gc = function()
        inner = inner + 1
        local b = encode({ nested = inner })
        assert.equals(inner, codec.decode("memory", b).nested)
        arm()
      end })
    end
    arm()
    collectgarbage("restart")
    support.gc_pace(1, 1000, 1) -- collection steps at almost every allocation, large ones
    -- decodes until a finalizer ran inside one: when a cycle ends depends
    -- on the heap and the debt the earlier specs left
    local copy
    for _ = 1, 100 do
      copy = codec.decode("memory", bytes, metas)
      if inner > 0 then break end
    end
    support.gc_pace(200, 100, 13)
    assert.is_true(inner > 0, "no finalizer ran during the decode")
    assert.equals(2000, #copy)
    assert.equals("row2000", copy[2000].name)
  end)
end)
