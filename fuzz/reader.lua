-- Reads a fuzz input byte by byte: past its end every byte reads 0, so a
-- short input still describes a value.
local Reader = {}
Reader.__index = Reader

function Reader.new(s) return setmetatable({ s = s, i = 1 }, Reader) end

function Reader:byte()
  local b = self.s:byte(self.i) or 0
  self.i = self.i + 1
  return b
end

-- n bytes as a string (zero bytes past the end).
function Reader:bytes(n)
  local s = self.s:sub(self.i, self.i + n - 1)
  self.i = self.i + n
  return s .. string.rep("\0", n - #s)
end

function Reader:left() return #self.s - self.i + 1 end

return Reader
