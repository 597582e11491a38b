#!/usr/bin/env bash
# make e2e: installs the rock into a tree of its own (build/e2e-tree, with
# luarocks make), starts the installed command `cache-resource run` on the
# demo app and chromedriver on loopback, runs the browser checks, stops both.
set -u
cd "$(dirname "$0")/../.."
APP_PORT=${CR_E2E_PORT:-8599}
DRIVER_PORT=${CR_E2E_DRIVER_PORT:-9515}
mkdir -p build docs
rm -f build/e2e.sqlite3
# cache_data's default store (the demo's persisted query) in the build, not in $HOME
# The word model takes about two seconds to build here: long enough for the browser to see
# its spinner even on a busy machine.
export CR_DEMO_SIZE=${CR_DEMO_SIZE:-6000000}
export CR_CACHE_DIR=$PWD/build/e2e-cache
rm -rf "$CR_CACHE_DIR"
rm -rf build/e2e-profile && mkdir -p build/e2e-profile/js build/e2e-profile/nojs
TREE=$PWD/build/e2e-tree
rm -rf "$TREE"
if ! luarocks --lua-version=5.4 make --tree="$TREE" rockspec/cache_resource-scm-1.rockspec >build/e2e-install.log 2>&1
then
  tail -20 build/e2e-install.log; echo "e2e: luarocks make failed"; exit 1
fi
rm -f cache_resource.so src/*.o # what luarocks make leaves in the checkout
CR_DEMO_DB=build/e2e.sqlite3 "$TREE/bin/cache-resource" run examples/app.lua --port "$APP_PORT" \
  >build/e2e-server.log 2>&1 &
server=$!
chromedriver --port="$DRIVER_PORT" >build/e2e-driver.log 2>&1 &
driver=$!
trap 'kill $server $driver 2>/dev/null; wait 2>/dev/null' EXIT
for _ in $(seq 1 100); do
  if lua5.4 -e "local h = require 'socket.http'; assert(h.request('http://127.0.0.1:$APP_PORT/healthz')); assert(h.request('http://127.0.0.1:$DRIVER_PORT/status'))" 2>/dev/null; then break; fi
  sleep 0.1
done
CR_E2E_PROFILE=build/e2e-profile lua5.4 spec/e2e/browser.lua "http://127.0.0.1:$APP_PORT" "http://127.0.0.1:$DRIVER_PORT" \
  docs/screenshot.png docs/screenshot-loading.png
status=$?
[ $status -eq 0 ] || { echo "--- server log"; tail -20 build/e2e-server.log; }

# Served replicas: two servers of the demo app (from the same tree, the Redis
# store's rock added) behind one private redis-server on loopback.
if ! command -v redis-server >/dev/null; then
  echo "e2e replicas: skipped (redis-server is not installed: apt-get install redis-server)"
  exit $status
fi
if ! luarocks --lua-version=5.4 make --tree="$TREE" --deps-mode=none rockspec/cache_resource-redis-scm-1.rockspec \
    >>build/e2e-install.log 2>&1; then
  tail -20 build/e2e-install.log; echo "e2e replicas: luarocks make of the Redis store failed"; exit 1
fi
rm -f cache_resource.so src/*.o src/redis/*.o
redis_dir=$(mktemp -d)
REDIS_PORT=$(lua5.4 -e 'local l = require("cqueues.socket").listen { host = "127.0.0.1", port = 0 }
  assert(l:listen()); print(select(3, l:localname()))')
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$redis_dir" \
  --logfile "$redis_dir/redis.log" &
redis=$!
replicas=""
rm -f build/e2e-replica1.sqlite3 build/e2e-replica2.sqlite3
trap 'kill $server $driver $redis $replicas 2>/dev/null; wait 2>/dev/null; rm -rf "$redis_dir"' EXIT
for n in 1 2; do
  CR_DEMO_REDIS_PORT=$REDIS_PORT CR_DEMO_DB=build/e2e-replica$n.sqlite3 \
    "$TREE/bin/cache-resource" run examples/app.lua --port $((APP_PORT + n)) >build/e2e-replica$n.log 2>&1 &
  replicas="$replicas $!"
done
for _ in $(seq 1 100); do
  if lua5.4 -e "local h = require 'socket.http'
    assert(h.request('http://127.0.0.1:$((APP_PORT + 1))/healthz')); assert(h.request('http://127.0.0.1:$((APP_PORT + 2))/healthz'))
    assert(require('cqueues.socket').connect('127.0.0.1', $REDIS_PORT):connect(1))" 2>/dev/null; then break; fi
  sleep 0.1
done
lua5.4 spec/e2e/replicas.lua "http://127.0.0.1:$((APP_PORT + 1))" "http://127.0.0.1:$((APP_PORT + 2))" || {
  status=1; echo "--- replica logs"; tail -10 build/e2e-replica1.log build/e2e-replica2.log; }
exit $status
