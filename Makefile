SHELL := /bin/bash
# cache_resource — build, test, install. See README.md.
# LUA=lua5.3 builds and tests against Lua 5.3, in build53/ (make test53).
LUA      ?= lua5.4
LUA_INC  ?= /usr/include/$(LUA)
BUILD    ?= $(if $(filter lua5.4,$(LUA)),build,build$(subst .,,$(subst lua,,$(LUA))))
BUSTED   ?= $(LUA) /usr/bin/busted --ignore-lua
CC       ?= cc
OPT      ?= -O2 -g
WARN      = -std=c99 -Wall -Wextra -Werror -pedantic
CFLAGS_ALL = $(WARN) $(OPT) -fPIC -I$(LUA_INC) $(EXTRA_CFLAGS)
SRCS     := $(wildcard src/*.c)
HDRS     := $(wildcard src/*.h)
# cache_resource.sqlite, the default store, and cache_resource.redis_resp,
# the Redis store's protocol module: shared objects of their own, linked
# with libsqlite3 and hiredis, so that the core links nothing.
SQLITE_SRCS := $(wildcard src/sqlite/*.c)
SQLITE_HDRS := $(wildcard src/sqlite/*.h) src/cr_compat.h
REDIS_SRCS := $(wildcard src/redis/*.c)
DEB_PKGS  = $(LUA) lib$(LUA)-dev lua-busted luarocks libxxhash-dev lua-cqueues lua-socket lua-dkjson lua-sql-sqlite3 \
  libsqlite3-dev libhiredis-dev
E2E_PKGS  = chromium chromium-driver
ASAN_LIB  = $(shell $(CC) -print-file-name=libasan.so)
ASAN_CFLAGS = $(WARN) -O1 -g -fPIC -I$(LUA_INC) -fsanitize=address,undefined -fno-omit-frame-pointer \
  -fno-sanitize-recover=undefined

.PHONY: all sqlite deps e2e-deps fuzz-deps apt demo serve e2e bench bench-callgrind fuzz valgrind test test53 asan install \
  clean dist docs lint lint-lua release-rockspecs layers

all: $(BUILD)/cache_resource.so sqlite $(BUILD)/cache_resource/redis_resp.so

sqlite: $(BUILD)/cache_resource/sqlite.so

# Never -llua5.4: the interpreter already holds the Lua VM. Nor -lxxhash:
# xxHash is inlined from its header (XXH_INLINE_ALL).
$(BUILD)/cache_resource.so: $(SRCS) $(HDRS)
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS_ALL) -shared -o $@ $(SRCS)

build-asan/cache_resource.so: $(SRCS) $(HDRS)
	@mkdir -p build-asan
	$(CC) $(ASAN_CFLAGS) -shared -o $@ $(SRCS)

# `require "cache_resource.sqlite"` finds it as <cpath dir>/cache_resource/sqlite.so.
# Never -llua5.4 here either; -lsqlite3 is its one library.
$(BUILD)/cache_resource/sqlite.so: $(SQLITE_SRCS) $(SQLITE_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -shared -o $@ $(SQLITE_SRCS) -lsqlite3

build-asan/cache_resource/sqlite.so: $(SQLITE_SRCS) $(SQLITE_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_CFLAGS) -shared -o $@ $(SQLITE_SRCS) -lsqlite3

$(BUILD)/cache_resource/redis_resp.so: $(REDIS_SRCS) src/cr_compat.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -shared -o $@ $(REDIS_SRCS) -lhiredis

build-asan/cache_resource/redis_resp.so: $(REDIS_SRCS) src/cr_compat.h
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_CFLAGS) -shared -o $@ $(REDIS_SRCS) -lhiredis

deps:
	@$(MAKE) --no-print-directory apt PKGS="$(DEB_PKGS)"

e2e-deps:
	@$(MAKE) --no-print-directory apt PKGS="$(DEB_PKGS) $(E2E_PKGS)"

# Installs the Debian packages in PKGS that are missing; a no-op otherwise.
apt:
	@missing=""; for p in $(PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# The demo app in the terminal: five runs of one session, then stats.
demo: deps all
	$(LUA) examples/demo.lua

# The demo app (or APP=path/to/app.lua) as a web page on 127.0.0.1:8501
# (CR_HOST, CR_PORT, CR_IDLE, CR_MAX_SESSIONS), served by the command the rock
# installs, cache-resource run, with this checkout's modules on the paths
# (as the installed command has its tree's).
APP      ?= examples/app.lua
CR_HOST  ?= 127.0.0.1
CR_PORT  ?= 8501
CR_IDLE  ?= 900
CR_MAX_SESSIONS ?= 1000
serve: deps all
	$(LUA) -e 'package.path = "lua/?.lua;" .. package.path; package.cpath = "$(BUILD)/?.so;" .. package.cpath' \
	  bin/cache-resource run $(APP) --host $(CR_HOST) --port $(CR_PORT) --idle $(CR_IDLE) \
	  --max-sessions $(CR_MAX_SESSIONS)

# Headless Chromium against `make serve`; saves docs/screenshot.png.
e2e: e2e-deps all
	bash spec/e2e/run.sh

# The suite's default cache_data store (persist = true) is a fresh directory
# under the build, never the user's cache.
SPEC_CACHE = rm -rf $(CURDIR)/$(1)/spec-cache && CR_CACHE_DIR=$(CURDIR)/$(1)/spec-cache

test: deps all
	$(call SPEC_CACHE,$(BUILD)) CR_BUILD=$(BUILD) $(BUSTED) -o plainTerminal 2>&1 | tee $(BUILD)/busted.log; exit $${PIPESTATUS[0]}

# The same suite on Lua 5.3 (build53/; specs that need 5.4 say so, pending).
test53:
	@$(MAKE) --no-print-directory LUA=lua5.3 test

# The whole suite against the sanitized build. lua5.4 itself is not
# instrumented, so the ASan runtime is preloaded.
asan: deps build-asan/cache_resource.so build-asan/cache_resource/sqlite.so build-asan/cache_resource/redis_resp.so
	@mkdir -p build
	$(call SPEC_CACHE,build-asan) LD_PRELOAD=$(ASAN_LIB) ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 CR_BUILD=build-asan \
	  $(BUSTED) -o plainTerminal 2>&1 | tee build/busted-asan.log; exit $${PIPESTATUS[0]}

install: deps
	luarocks --lua-version=$(subst lua,,$(LUA)) make rockspec/cache_resource-scm-1.rockspec \
	  CFLAGS="-O2 -fPIC $(WARN)"

# luacheck (.luacheckrc); fails on any warning.
LINT_DIRS = lua/ spec/ examples/ bench/ fuzz/ bin/cache-resource
lint-lua:
	@$(MAKE) --no-print-directory apt PKGS=lua-check
	luacheck $(LINT_DIRS)

# The API reference (config.ld) in docs/api/; fails on any LDoc warning.
# Debian's LDoc runs on Lua 5.1 (lua-any), and so does its markdown module.
docs:
	@$(MAKE) --no-print-directory apt PKGS="lua5.1 lua-ldoc lua-markdown"
	@mkdir -p build && rm -rf docs/api
	@ldoc . >build/ldoc.log 2>&1; status=$$?; cat build/ldoc.log; \
	  if [ $$status -ne 0 ] || grep -v -E '^(reading configuration from config\.ld|output written to .*/docs/api|found master module	.*)$$' \
	    build/ldoc.log >/dev/null; then echo "docs: LDoc failed or warned"; exit 1; fi

# The release: dist/v$(VERSION).tar.gz (git archive of HEAD, as the release
# rockspecs' source.url names it) and one source rock per release rockspec,
# laid out as `luarocks pack` lays them out (the rockspec and the archive),
# built offline. Install one with
#   luarocks --lua-version=5.4 install dist/cache_resource-$(VERSION)-1.src.rock
VERSION  := 0.2.0
ROCKREV  := 1
ROCKS    := cache_resource cache_resource-cqueues cache_resource-sqlite cache_resource-redis
REPO_URL := https://github.com/cache-resource/cache_resource

# Writes the release rockspecs from the scm ones (the same build, the
# release archive as source, cache_resource pinned to this version). Run it
# after changing an scm rockspec; the packaging spec checks they agree.
release-rockspecs:
	set -e; for r in $(ROCKS); do \
	  sed -e 's/^version = "scm-1"$$/version = "$(VERSION)-$(ROCKREV)"/' \
	      -e 's|^  url = "git+$(REPO_URL).git",$$|  url = "$(REPO_URL)/archive/v$(VERSION).tar.gz",\n  dir = "cache_resource-$(VERSION)",|' \
	      -e 's/^  "cache_resource",$$/  "cache_resource == $(VERSION)",/' \
	      rockspec/$$r-scm-1.rockspec >rockspec/$$r-$(VERSION)-$(ROCKREV).rockspec; \
	done

dist:
	@[ -z "$$(git status --porcelain --untracked-files=no)" ] || \
	  echo "dist: note: uncommitted changes are not in the archive (it is HEAD)"
	rm -rf dist/stage && mkdir -p dist/stage
	git archive --format=tar.gz --prefix=cache_resource-$(VERSION)/ -o dist/v$(VERSION).tar.gz HEAD
	cp dist/v$(VERSION).tar.gz dist/stage/
	set -e; for r in $(ROCKS); do \
	  cp rockspec/$$r-$(VERSION)-$(ROCKREV).rockspec dist/stage/; \
	  rm -f dist/$$r-$(VERSION)-$(ROCKREV).src.rock; \
	  (cd dist/stage && zip -q ../$$r-$(VERSION)-$(ROCKREV).src.rock \
	    $$r-$(VERSION)-$(ROCKREV).rockspec v$(VERSION).tar.gz); \
	done
	rm -rf dist/stage
	@ls -l dist

clean:
	rm -rf build build53 build-asan dist docs/api src/*.o src/sqlite/*.o cache_resource.so

# Side-by-side ratios (see docs/performance.md); QUICK=1 for a short run.
# The SQLite store's rows compare it with a bare SQLite statement
# (bench/sqlite_bare.c, a module built for the bench only); the Redis rows
# (bench/bench_redis.lua) need redis-server, else say so.
bench: deps all build/bench_sqlite_bare.so build/bench_api_floor.so
	QUICK=$(QUICK) $(LUA) bench/bench.lua
	@echo
	QUICK=$(QUICK) $(LUA) bench/bench_redis.lua

build/bench_sqlite_bare.so: bench/sqlite_bare.c
	@mkdir -p build
	$(CC) $(CFLAGS_ALL) -shared -o $@ bench/sqlite_bare.c -lsqlite3

# The hit rows' C API floor (bench/api_floor.c): the calls a hit makes
# through Lua's C API, without its key, hash and probe.
build/bench_api_floor.so: bench/api_floor.c
	@mkdir -p build
	$(CC) $(CFLAGS_ALL) -shared -o $@ bench/api_floor.c

# Instructions per hit under callgrind (repeatable, unlike times), beside a
# hand-written memo called through a function and a no-op C function.
bench-callgrind: deps all build/bench_api_floor.so
	@dpkg -s valgrind >/dev/null 2>&1 || $(MAKE) --no-print-directory apt PKGS=valgrind
	bash bench/callgrind.sh

# libFuzzer (clang-14 + libclang-rt-14-dev), one run per script of the
# host: fuzz/fuzz_keys.lua (keys, the replay recorder) and
# fuzz/fuzz_codec.lua (the value codec). FUZZ_TIME seconds in all (default
# 60), shared evenly; FUZZ_RUNS=N for runs of N executions each.
FUZZ_TIME ?= 60
FUZZ_SCRIPTS = keys codec
FUZZ_FLAGS = $(if $(FUZZ_RUNS),-runs=$(FUZZ_RUNS),-max_total_time=$$(( $(FUZZ_TIME) / 2 )))
build/fuzz_host: fuzz/fuzz_host.c $(SRCS) $(HDRS)
	@mkdir -p build
	clang-14 -std=c99 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	  -I$(LUA_INC) -o $@ fuzz/fuzz_host.c $(SRCS) -l$(LUA) -lm

fuzz: fuzz-deps build/fuzz_host
	@rm -f build/fuzz.log
	@for s in $(FUZZ_SCRIPTS); do \
	  mkdir -p build/fuzz-corpus/$$s; \
	  echo "== fuzz/fuzz_$$s.lua =="; len=512; [ $$s = codec ] && len=1024; \
	  CR_FUZZ_SCRIPT=fuzz/fuzz_$$s.lua ASAN_OPTIONS=detect_leaks=1 ./build/fuzz_host $(FUZZ_FLAGS) -max_len=$$len \
	    -print_final_stats=1 build/fuzz-corpus/$$s fuzz/seeds/$$s 2>&1 | tee -a build/fuzz.log \
	    | grep -E 'Done|stat::number_of_executed_units|ERROR|invariant'; \
	  status=$${PIPESTATUS[0]}; [ $$status -eq 0 ] || exit $$status; \
	done

fuzz-deps:
	@$(MAKE) --no-print-directory apt PKGS="$(DEB_PKGS) clang-14 libclang-rt-14-dev"

# The whole suite under memcheck: no errors, nothing definitely or
# indirectly lost (still-reachable memory of lua5.4 and dlopen is not ours).
valgrind: deps all
	@mkdir -p build
	apt_missing=$$(dpkg -s valgrind >/dev/null 2>&1 || echo valgrind); \
	  [ -z "$$apt_missing" ] || $(MAKE) --no-print-directory apt PKGS=valgrind
	$(call SPEC_CACHE,build) valgrind --quiet --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect \
	  --errors-for-leak-kinds=definite,indirect --log-file=$(CURDIR)/build/valgrind.log \
	  $(BUSTED) -o plainTerminal 2>&1 | tee build/busted-valgrind.log; status=$${PIPESTATUS[0]}; \
	  cat build/valgrind.log; exit $$status

# The C core's layers (src/layers.txt): compiles src/*.c, reads who calls
# whom from the objects (nm), fails on a call up the layers; the spec
# suite runs the same check (spec/layers_spec.lua).
layers:
	@$(MAKE) --no-print-directory apt PKGS=binutils
	$(LUA) spec/layers.lua $(LUA_INC) $(CC)

# Static analysis of src/ (the core, src/sqlite/ and src/redis/) with zero
# findings: gcc -fanalyzer, clang-tidy's static analyzer (clang-analyzer-*)
# and cppcheck. Errors are raised through
# cr_error, declared noreturn, so the analyzers see the real paths. cppcheck
# checks the GCC configuration (-D__GNUC__: the noreturn attribute) and gets
# LLONG_MAX, which luaconf.h reads from a system header it does not parse.
LINT_CC   ?= gcc
LINT_PKGS  = cppcheck clang-tidy
lint:
	@$(MAKE) --no-print-directory apt PKGS="$(DEB_PKGS) $(LINT_PKGS)"
	@echo "== $(LINT_CC) -fanalyzer =="
	@for f in $(SRCS) $(SQLITE_SRCS) $(REDIS_SRCS); do \
	  $(LINT_CC) $(WARN) -O1 -fanalyzer -I$(LUA_INC) -c -o /dev/null $$f || exit 1; \
	done
	@echo "== clang-tidy (clang-analyzer-*) =="
	@# one file per run: clang-tidy 14 carries va_list state from one file to the next
	@for f in $(SRCS) $(SQLITE_SRCS) $(REDIS_SRCS); do \
	  clang-tidy $$f --quiet --checks='-*,clang-analyzer-*' --warnings-as-errors='*' -- -std=c99 -I$(LUA_INC) \
	    2>&1 | grep -v '^[0-9]* warnings\? generated\.$$'; [ $${PIPESTATUS[0]} -eq 0 ] || exit 1; \
	done
	@echo "== cppcheck =="
	cppcheck --enable=warning,portability,performance --error-exitcode=1 --inline-suppr --quiet --std=c99 \
	  -D__GNUC__ -DLLONG_MAX=9223372036854775807LL -I$(LUA_INC) --suppress=missingIncludeSystem src/
	@echo "lint: 0 findings"
