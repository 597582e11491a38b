-- The e2e scripts' checks: each prints ok or FAIL with what it checked, and
-- the summary line ends the process (status 1 when any failed).
local M = {}
local checks, failed = 0, 0

function M.check(ok, what)
  checks = checks + 1
  if not ok then failed = failed + 1 end
  print((ok and "ok   " or "FAIL ") .. what)
  return ok
end

-- Prints "LABEL: N passed, N failed" and exits.
function M.finish(label)
  print(string.format("%s: %d passed, %d failed", label, checks - failed, failed))
  os.exit(failed == 0 and 0 or 1)
end

return M
