-- make e2e: drives headless Chromium (through Debian's chromedriver, over the
-- WebDriver HTTP protocol) against a running `make serve`. Checks that the
-- replayed elements are on a second load without the cached function running
-- again, toggles a widget, checks the page changes, saves a screenshot.
--   lua5.4 spec/e2e/browser.lua APP_URL DRIVER_URL SCREENSHOT.png
local http = require "socket.http"
local ltn12 = require "ltn12"
local json = require "dkjson"

local app, driver, shot = arg[1], arg[2], arg[3]
local checks, failed = 0, 0

local function check(ok, what)
  checks = checks + 1
  if not ok then failed = failed + 1 end
  print((ok and "ok   " or "FAIL ") .. what)
end

local function request(method, url, body)
  local out = {}
  local payload = body and json.encode(body) or nil
  local _, code = http.request {
    url = url, method = method, sink = ltn12.sink.table(out),
    source = payload and ltn12.source.string(payload) or nil,
    headers = payload and { ["Content-Type"] = "application/json", ["Content-Length"] = #payload } or nil,
  }
  local text = table.concat(out)
  return code, (text ~= "" and json.decode(text) or nil), text
end

local EMPTY = setmetatable({}, { __jsontype = "object" }) -- dkjson writes {} as []

local function wd(method, path, body)
  local code, data, text = request(method, driver .. path, body)
  if code ~= 200 then error(string.format("WebDriver %s %s -> %s: %s", method, path, tostring(code), text), 2) end
  return data.value
end

local function stats()
  local _, data = request("GET", app .. "/stats")
  local by = {}
  for _, s in ipairs(data) do by[s.name] = s end
  return by
end

local function base64_decode(s)
  local map = {}
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  for i = 1, 64 do map[alphabet:byte(i)] = i - 1 end
  local out, bits, nbits = {}, 0, 0
  for i = 1, #s do
    local v = map[s:byte(i)]
    if v then
      bits, nbits = (bits << 6) | v, nbits + 6
      if nbits >= 8 then
        nbits = nbits - 8
        out[#out + 1] = string.char((bits >> nbits) & 0xff)
      end
    end
  end
  return table.concat(out)
end

local session = wd("POST", "/session", { capabilities = { alwaysMatch = {
  browserName = "chrome",
  ["goog:chromeOptions"] = {
    binary = "/usr/bin/chromium",
    args = { "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--no-first-run", "--window-size=900,640" },
  },
} } }).sessionId
local S = "/session/" .. session

local function page_texts()
  return wd("POST", S .. "/execute/sync", { script = [[
    return Array.from(document.querySelectorAll('.cr-page > *')).map(function (e) {
      return e.className + '|' + e.innerText; });]], args = {} })
end

local function has(texts, class, text)
  for _, t in ipairs(texts) do
    if t:find(class, 1, true) and t:find(text, 1, true) then return true end
  end
  return false
end

local function wait_for(pred, seconds)
  local deadline = os.time() + seconds
  repeat
    local texts = page_texts()
    if pred(texts) then return texts end
    os.execute("sleep 0.2")
  until os.time() > deadline
  return page_texts()
end

local ok, err = pcall(function()
  wd("POST", S .. "/url", { url = app .. "/" })
  local first = page_texts()
  if os.getenv("CR_E2E_DEBUG") then for _, t in ipairs(first) do print("  page: " .. t) end end
  check(has(first, "cr-header", "Data analysis"), "first load shows the header written inside load_model")
  check(has(first, "cr-success", "Loaded model"), "first load shows the success message")
  local misses = stats().load_model.misses

  wd("POST", S .. "/refresh", EMPTY)
  local second = page_texts()
  check(has(second, "cr-header", "Data analysis") and has(second, "cr-success", "Loaded model"),
    "second load shows the replayed header and success message")
  local after = stats().load_model
  check(after.misses == misses and after.hits >= 1, "the second load did not run load_model again (hits "
    .. after.hits .. ", misses " .. after.misses .. ")")
  check(not has(second, "cr-json", "total_words"), "raw data is hidden before the toggle")

  local box = wd("POST", S .. "/element", { using = "css selector", value = 'input[name="checkbox:Show raw data"]' })
  local id = box["element-6066-11e4-a52e-4f735466cecf"] or box.ELEMENT
  if not id then error("no element handle in " .. json.encode(box)) end
  wd("POST", S .. "/element/" .. id .. "/click", EMPTY)
  local toggled = wait_for(function(t) return has(t, "cr-json", "total_words") end, 10)
  check(has(toggled, "cr-json", "total_words"), "ticking 'Show raw data' re-runs the script and shows the raw data")
  local checked = wd("POST", S .. "/execute/sync", { script =
    "return document.querySelector('input[name=\"checkbox:Show raw data\"]').checked", args = {} })
  check(checked == true, "the checkbox comes back checked")

  local png = base64_decode(wd("GET", S .. "/screenshot"))
  local f = assert(io.open(shot, "wb"))
  f:write(png)
  f:close()
  check(png:sub(1, 8) == "\137PNG\r\n\26\n", "saved a PNG screenshot to " .. shot)
end)
pcall(wd, "DELETE", S)
if not ok then
  failed = failed + 1
  print("FAIL " .. tostring(err))
end
print(string.format("e2e: %d passed, %d failed", checks - (ok and failed or failed - 1), failed))
os.exit(failed == 0 and 0 or 1)
