-- A deterministic synthetic corpus and a word model built from it: real
-- work (about a second) for the demo's cached "model".
local M = {}

M.DEFAULT_SIZE = 3000000 -- words; building takes about a second here (>= 0.5 s wanted)

local function lcg(seed)
  return function(n)
    seed = (seed * 1103515245 + 12345) % 2147483648
    return (seed >> 15) % n -- the high bits: an LCG's low bits cycle quickly
  end
end

-- A Zipf-like vocabulary: a few words are very common, most are rare.
local function vocabulary(rnd, size)
  local syllables = { "ka", "lo", "mi", "ra", "tu", "ne", "so", "vi", "da", "pe", "zu", "ri" }
  local words, seen = {}, {}
  while #words < size do
    local parts = {}
    for i = 1, 1 + rnd(3) do parts[i] = syllables[rnd(#syllables) + 1] end
    local w = table.concat(parts)
    if not seen[w] then seen[w] = true; words[#words + 1] = w end
  end
  return words
end

--- Builds unigram and bigram counts over `size` generated words.
function M.build_model(size)
  local rnd = lcg(20261123)
  local vocab = vocabulary(rnd, 1500)
  local nv = #vocab
  local unigrams, bigrams = {}, {}
  local prev
  for _ = 1, size do
    local r = rnd(nv)
    local w = vocab[(r * r) // nv + 1]
    unigrams[w] = (unigrams[w] or 0) + 1
    if prev then
      local follow = bigrams[prev]
      if not follow then follow = {}; bigrams[prev] = follow end
      follow[w] = (follow[w] or 0) + 1
    end
    prev = w
  end
  local distinct = 0
  for _ in pairs(unigrams) do distinct = distinct + 1 end
  return { total = size, distinct = distinct, unigrams = unigrams, bigrams = bigrams }
end

--- The n most frequent words as "word (count)" strings.
function M.top(model, n)
  local list = {}
  for w, c in pairs(model.unigrams) do list[#list + 1] = { w, c } end
  table.sort(list, function(a, b) return a[2] > b[2] or (a[2] == b[2] and a[1] < b[1]) end)
  local out = {}
  for i = 1, math.min(n, #list) do out[i] = string.format("%s (%d)", list[i][1], list[i][2]) end
  return out
end

--- The most likely other word after `word`.
function M.next_word(model, word)
  local best, bestc
  for w, c in pairs(model.bigrams[word] or {}) do
    if w ~= word and (not bestc or c > bestc or (c == bestc and w < best)) then best, bestc = w, c end
  end
  return best
end

return M
