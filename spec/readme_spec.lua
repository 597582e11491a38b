-- Every ```lua block of README.md and of docs/*.md runs as written: each in
-- a fresh Lua process (the interpreter running this suite), in an empty temporary
-- directory, with this checkout's modules on its paths, and must exit 0
-- within TIMEOUT seconds.
--
-- A block that is deliberately not a whole program is marked by the line
-- `<!-- fragment -->` right before its opening fence (blank lines may come
-- between). A fragment is only compiled, not run. Keep them rare.
local support = require "support"

local TIMEOUT = 10

-- Blocks that fail today, by their first line: pending until their page is
-- fixed (then delete the line here).
local KNOWN_FAILING = {
}

-- What only Lua 5.4 has, as it shows in a block's text.
local NEEDS_54 = {
  { pattern = "<close>", feature = "<close>" },
  { pattern = "coroutine%.close", feature = "coroutine.close" },
  { pattern = "%f[%w_.:]warn%s*%(", feature = "warn" },
}

local shell_quote = support.shell_quote

local function run(command)
  return support.shell(command .. " 2>&1")
end

-- The ```lua blocks of a Markdown text: { line =, first =, code =, fragment = }.
local function lua_blocks(name, text)
  local blocks, current, previous = {}, nil, ""
  local n = 0
  for line in (text .. "\n"):gmatch("(.-)\r?\n") do
    n = n + 1
    if current then
      if line:match("^%s*```%s*$") then
        current.code = table.concat(current.lines, "\n") .. "\n"
        current.first = current.lines[1] or ""
        blocks[#blocks + 1] = current
        current = nil
      else
        current.lines[#current.lines + 1] = line
      end
    elseif line:match("^%s*```%s*lua%s*$") then
      current = { line = n, lines = {}, fragment = previous:match("^%s*<!%-%-%s*fragment%s*%-%->%s*$") ~= nil }
    end
    if not current and line:match("%S") then previous = line end
  end
  assert(current == nil, name .. ": the ```lua block at line " .. (current and current.line or 0) .. " is not closed")
  return blocks
end

-- The pages whose blocks run: the README, then docs/*.md.
local function pages()
  local list = { "README.md" }
  for path in select(2, run("ls docs/*.md")):gmatch("[^\n]+") do
    if path:match("^docs/[^/]+%.md$") then list[#list + 1] = path end
  end
  return list
end

local function missing_feature(code)
  for _, need in ipairs(NEEDS_54) do
    if code:find(need.pattern) and not support.HAS[need.feature] then return need.feature end
  end
end

local function run_block(block)
  local dir = (select(2, run("mktemp -d")):gsub("\n$", ""))
  assert(dir:match("^/"), "mktemp -d failed: " .. dir)
  local f = assert(io.open(dir .. "/block.lua", "wb"))
  f:write(block.code)
  f:close()
  local ok, out, _, code = run(string.format("cd %s && timeout %d %s", shell_quote(dir), TIMEOUT,
    support.lua_command("block.lua")))
  run("rm -rf " .. shell_quote(dir))
  return ok, out, code
end

describe("the Lua examples of README.md and docs/*.md", function()
  local by_page, all = {}, {}
  for _, page in ipairs(pages()) do
    by_page[#by_page + 1] = { page = page, blocks = lua_blocks(page, support.read_file(page)) }
    for _, block in ipairs(by_page[#by_page].blocks) do all[#all + 1] = block end
  end

  it("include the README's, most of them whole programs (fragments are rare)", function()
    assert.is_true(#by_page[1].blocks >= 1)
    assert.is_true(#by_page > 1, "no page in docs/")
    local fragments = 0
    for _, block in ipairs(all) do
      if block.fragment then fragments = fragments + 1 end
    end
    assert.is_true(fragments * 4 <= #all, fragments .. " of " .. #all .. " blocks are fragments")
  end)

  for _, entry in ipairs(by_page) do
    local page = entry.page
    describe(page, function()
      for _, block in ipairs(entry.blocks) do
        local at = page .. ":" .. block.line
        local name = "line " .. block.line .. ": " .. block.first
        local feature = missing_feature(block.code)
        if KNOWN_FAILING[block.first] then
          pending(block.first .. " [" .. at .. ": fails today]")
        elseif feature then
          pending(name .. " [skipped: needs " .. feature .. ", which " .. _VERSION .. " lacks]")
        elseif block.fragment then
          it("fragment at " .. name .. " compiles", function()
            local chunk, err = load(block.code, "=" .. at, "t")
            assert(chunk, err)
          end)
        else
          it("runs the block at " .. name, function()
            local ok, out, code = run_block(block)
            if code == 124 then out = out .. "\n(timed out after " .. TIMEOUT .. " s)" end
            assert(ok, at .. " exited with " .. tostring(code) .. ":\n" .. out)
          end)
        end
      end
    end)
  end
end)
