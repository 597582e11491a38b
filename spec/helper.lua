-- Loads the in-tree module: build/ normally, build-asan/ under `make asan`.
local dir = os.getenv("CR_BUILD") or "build"
package.cpath = "./" .. dir .. "/?.so;" .. package.cpath
