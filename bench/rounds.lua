-- Side-by-side timing for the benches (bench.lua, bench_redis.lua).
local M = {}

function M.median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

-- Times bodies side by side; each body(n) makes n calls, and time(body, n)
-- returns the seconds it took. Round r of every body runs before round
-- r + 1 of any, so a noisy neighbour on a shared machine slows them alike.
-- Returns samples[i][r], body i's seconds per call in round r.
function M.interleaved(bodies, n, rounds, time)
  local samples = {}
  for i, body in ipairs(bodies) do
    body(math.max(1, n // 10)) -- warm up
    samples[i] = {}
  end
  for r = 1, rounds do
    for i, body in ipairs(bodies) do samples[i][r] = time(body, n) / n end
  end
  return samples
end

return M
