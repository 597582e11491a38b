-- The layer check of the C core: which file of src/ calls which, read from
-- the symbols of each file's object (nm), against the table in
-- src/layers.txt (its comments say how to read it).
--
-- The objects are compiled without optimization, so a static inline
-- function of a header is a function of each object that uses it, and what
-- it calls counts as a call of that file.
--
-- `lua5.4 spec/layers.lua` (make layers) prints the calls between files and
-- fails on any that runs up the layers; spec/layers_spec.lua runs the same
-- check. Needs cc and nm.
local M = {}

M.TABLE = "src/layers.txt"

-- The table: { files = { name... } (top to bottom), rank = { name = n },
-- layer = { name = layer }, pairs = { "a b" = true, ... }, pair_list }, or
-- nil and what is wrong with the text.
function M.read_table(text)
  local t = { files = {}, rank = {}, layer = {}, pairs = {}, pair_list = {} }
  local n = 0
  for line in text:gmatch("[^\n]*") do
    line = line:gsub("#.*", "")
    local words = {}
    for w in line:gmatch("%S+") do words[#words + 1] = w end
    if words[1] == "pair" then
      if #words ~= 3 then return nil, "a pair line names two files: " .. line end
      t.pairs[words[2] .. " " .. words[3]], t.pairs[words[3] .. " " .. words[2]] = true, true
      t.pair_list[#t.pair_list + 1] = { words[2], words[3] }
    elseif words[1] then
      if #words < 2 then return nil, "the layer " .. words[1] .. " lists no file" end
      for i = 2, #words do
        local file = words[i]
        if t.rank[file] then return nil, file .. " is in two places" end
        n = n + 1
        t.files[n], t.rank[file], t.layer[file] = file, n, words[1]
      end
    end
  end
  for _, p in ipairs(t.pair_list) do
    for _, file in ipairs(p) do
      if not t.rank[file] then
        return nil, "the pair " .. p[1] .. " " .. p[2] .. " names " .. file .. ", which has no layer"
      end
    end
  end
  return t
end

-- The global symbols of each object: { ["cr_x.c"] = { defs = { sym = true }, undefs = { ... } } },
-- from the output of `nm -A -g -P` over the objects (one "path: name type ..." a line).
function M.parse_nm(output)
  local objs = {}
  for path, name, kind in output:gmatch("([^\n:]+%.o): (%S+) (%a)[^\n]*") do
    local file = path:match("([^/]+)%.o$") .. ".c"
    local o = objs[file] or { defs = {}, undefs = {} }
    objs[file] = o
    if kind == "U" then o.undefs[name] = true else o.defs[name] = true end
  end
  return objs
end

-- The calls between files: a list of { from, to, symbols = { ... } }, sorted.
function M.calls(objs)
  local owner, out = {}, {}
  for file, o in pairs(objs) do
    for name in pairs(o.defs) do owner[name] = file end
  end
  for file, o in pairs(objs) do
    local by = {}
    for name in pairs(o.undefs) do
      local to = owner[name]
      if to and to ~= file then
        by[to] = by[to] or {}
        table.insert(by[to], name)
      end
    end
    for to, names in pairs(by) do
      table.sort(names)
      out[#out + 1] = { from = file, to = to, symbols = names }
    end
  end
  table.sort(out, function(a, b) return a.from < b.from or (a.from == b.from and a.to < b.to) end)
  return out
end

-- What breaks the layers: a list of messages, empty when none.
function M.check(t, objs)
  local problems, calls = {}, M.calls(objs)
  local present, files = {}, {}
  for file in pairs(objs) do files[#files + 1] = file end
  table.sort(files)
  for _, file in ipairs(files) do
    present[file] = true
    if not t.rank[file] then
      problems[#problems + 1] = ("src/%s has no layer: add it to a layer's line in %s, after every file that "
        .. "calls it and before every file it calls (that file says where new files go)"):format(file, M.TABLE)
    end
  end
  for _, file in ipairs(t.files) do
    if not present[file] then
      problems[#problems + 1] = ("%s names %s, which is not in src/: take it out of the table"):format(M.TABLE, file)
    end
  end
  local called = {}
  for _, c in ipairs(calls) do
    called[c.from .. " " .. c.to] = true
    local rf, rt = t.rank[c.from], t.rank[c.to]
    if rf and rt and rt < rf and not t.pairs[c.from .. " " .. c.to] then
      problems[#problems + 1] = ("%s (%s) calls up into %s (%s): %s; move what it calls below it, or give the "
        .. "caller a callback, instead of calling up"):format(c.from, t.layer[c.from], c.to, t.layer[c.to],
        table.concat(c.symbols, ", "))
    end
  end
  for _, p in ipairs(t.pair_list) do
    if present[p[1]] and present[p[2]] and not (called[p[1] .. " " .. p[2]] and called[p[2] .. " " .. p[1]]) then
      problems[#problems + 1] = ("%s declares the pair %s %s, but they no longer call each other: take the "
        .. "pair line out"):format(M.TABLE, p[1], p[2])
    end
  end
  return problems, calls
end

-- The C files of src/, their objects compiled into dir (made by the
-- caller) with cc at -O0; `run(command)` returns ok and the output. Returns
-- the objects' symbols, or nil and what failed.
function M.compile(run, dir, lua_inc, cc)
  local ok, list = run("ls src/*.c")
  if not ok then return nil, list end
  local objects = {}
  for src in list:gmatch("[^\n]+") do
    local obj = dir .. "/" .. src:match("([^/]+)%.c$") .. ".o"
    local out
    ok, out = run(("%s -std=c99 -O0 -fPIC -I%s -c %s -o %s 2>&1"):format(cc or "cc", lua_inc, src, obj))
    if not ok then return nil, "compiling " .. src .. " failed:\n" .. out end
    objects[#objects + 1] = obj
  end
  local out
  ok, out = run("nm -A -g -P " .. table.concat(objects, " ") .. " 2>&1")
  if not ok then return nil, "nm failed:\n" .. out end
  return M.parse_nm(out)
end

-- The report `make layers` prints: each file's layer and callees, then a
-- count line that ends "N not allowed".
function M.report(t, objs, problems, calls)
  local lines, out, up = {}, {}, 0
  for _, c in ipairs(calls) do
    out[c.from] = out[c.from] or {}
    table.insert(out[c.from], c.to)
    if t.rank[c.from] and t.rank[c.to] and t.rank[c.to] < t.rank[c.from] then up = up + 1 end
  end
  local nfiles, names = 0, {}
  for _ in pairs(objs) do nfiles = nfiles + 1 end
  for i, p in ipairs(t.pair_list) do names[i] = p[1] .. " <-> " .. p[2] end
  for _, file in ipairs(t.files) do
    local to = out[file] or {}
    table.sort(to, function(a, b) return (t.rank[a] or 0) < (t.rank[b] or 0) end)
    lines[#lines + 1] = ("%-5s %-17s -> %s"):format(t.layer[file], file, table.concat(to, " "))
  end
  for _, p in ipairs(problems) do lines[#lines + 1] = "not allowed: " .. p end
  lines[#lines + 1] = ("%d files, %d calls between files, %d up within a pair (%s), %d not allowed"):format(
    nfiles, #calls, up, #names > 0 and table.concat(names, ", ") or "none", #problems)
  return lines
end

-- make layers: `lua5.4 spec/layers.lua [LUA_INC [CC]]`, from the top of the tree.
if arg and arg[0] and arg[0]:match("layers%.lua$") and not package.loaded.busted then
  local function run(command)
    local p = assert(io.popen(command))
    local out = p:read("a")
    return p:close() and true or false, out
  end
  local f = assert(io.open(M.TABLE, "rb"))
  local t, err = M.read_table(f:read("a"))
  f:close()
  if not t then
    io.stderr:write(M.TABLE, ": ", err, "\n")
    os.exit(1)
  end
  local ok, dir = run("mktemp -d")
  assert(ok, dir)
  dir = dir:gsub("%s+$", "")
  local objs
  objs, err = M.compile(run, dir, arg[1] or "/usr/include/lua5.4", arg[2])
  run("rm -rf " .. dir)
  if not objs then
    io.stderr:write(err, "\n")
    os.exit(1)
  end
  local problems, calls = M.check(t, objs)
  print(table.concat(M.report(t, objs, problems, calls), "\n"))
  os.exit(#problems == 0 and 0 or 1)
end

return M
