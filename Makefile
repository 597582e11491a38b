SHELL := /bin/bash
# cache_resource — build, test, install. See README.md.
LUA      ?= lua5.4
LUA_INC  ?= /usr/include/lua5.4
BUSTED   ?= $(LUA) /usr/bin/busted --ignore-lua
CC       ?= cc
OPT      ?= -O2 -g
WARN      = -std=c99 -Wall -Wextra -Werror -pedantic
CFLAGS_ALL = $(WARN) $(OPT) -fPIC -I$(LUA_INC) $(EXTRA_CFLAGS)
SRCS     := $(wildcard src/*.c)
HDRS     := $(wildcard src/*.h)
DEB_PKGS  = lua5.4 liblua5.4-dev lua-busted luarocks libxxhash-dev lua-cqueues lua-socket lua-dkjson lua-sql-sqlite3
E2E_PKGS  = chromium chromium-driver
ASAN_LIB  = $(shell $(CC) -print-file-name=libasan.so)

.PHONY: all deps e2e-deps fuzz-deps apt demo serve e2e bench fuzz valgrind test asan install clean lint

all: build/cache_resource.so

# Never -llua5.4: the interpreter already holds the Lua VM.
build/cache_resource.so: $(SRCS) $(HDRS)
	@mkdir -p build
	$(CC) $(CFLAGS_ALL) -shared -o $@ $(SRCS) -lxxhash

build-asan/cache_resource.so: $(SRCS) $(HDRS)
	@mkdir -p build-asan
	$(CC) $(WARN) -O1 -g -fPIC -I$(LUA_INC) -fsanitize=address,undefined -fno-omit-frame-pointer \
	  -fno-sanitize-recover=undefined -shared -o $@ $(SRCS) -lxxhash

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

# The demo app as a web page on 127.0.0.1:8501 (CR_PORT, CR_HOST, CR_IDLE).
serve: deps all
	$(LUA) examples/serve.lua $(APP)

# Headless Chromium against `make serve`; saves docs/screenshot.png.
e2e: e2e-deps all
	bash spec/e2e/run.sh

test: deps all
	@mkdir -p build
	$(BUSTED) -o plainTerminal 2>&1 | tee build/busted.log; exit $${PIPESTATUS[0]}

# The whole suite against the sanitized build. lua5.4 itself is not
# instrumented, so the ASan runtime is preloaded.
asan: deps build-asan/cache_resource.so
	@mkdir -p build
	LD_PRELOAD=$(ASAN_LIB) ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 CR_BUILD=build-asan \
	  $(BUSTED) -o plainTerminal 2>&1 | tee build/busted-asan.log; exit $${PIPESTATUS[0]}

install: deps
	luarocks --lua-version=5.4 make rockspec/cache_resource-scm-1.rockspec \
	  CFLAGS="-O2 -fPIC $(WARN)"

clean:
	rm -rf build build-asan src/*.o cache_resource.so

# Side-by-side ratios (see README "Performance"); QUICK=1 for a short run.
bench: deps all
	QUICK=$(QUICK) $(LUA) bench/bench.lua

# libFuzzer on keys and the replay recorder (clang-14 + libclang-rt-14-dev).
# FUZZ_TIME seconds (default 60); FUZZ_RUNS=N for a run of N executions.
FUZZ_TIME ?= 60
FUZZ_FLAGS = $(if $(FUZZ_RUNS),-runs=$(FUZZ_RUNS),-max_total_time=$(FUZZ_TIME))
build/fuzz_keys: fuzz/fuzz_keys.c $(SRCS) $(HDRS)
	@mkdir -p build
	clang-14 -std=c99 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	  -I$(LUA_INC) -o $@ fuzz/fuzz_keys.c $(SRCS) -llua5.4 -lxxhash -lm

fuzz: fuzz-deps build/fuzz_keys
	@mkdir -p build/fuzz-corpus
	ASAN_OPTIONS=detect_leaks=1 ./build/fuzz_keys $(FUZZ_FLAGS) -max_len=512 -print_final_stats=1 \
	  build/fuzz-corpus fuzz/seeds 2>&1 | tee build/fuzz.log | grep -E 'Done|stat::number_of_executed_units|ERROR|invariant' ; \
	  exit $${PIPESTATUS[0]}

fuzz-deps:
	@$(MAKE) --no-print-directory apt PKGS="$(DEB_PKGS) clang-14 libclang-rt-14-dev"

# The whole suite under memcheck: no errors, nothing definitely or
# indirectly lost (still-reachable memory of lua5.4 and dlopen is not ours).
valgrind: deps all
	@mkdir -p build
	apt_missing=$$(dpkg -s valgrind >/dev/null 2>&1 || echo valgrind); \
	  [ -z "$$apt_missing" ] || $(MAKE) --no-print-directory apt PKGS=valgrind
	valgrind --quiet --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect \
	  --errors-for-leak-kinds=definite,indirect --log-file=$(CURDIR)/build/valgrind.log \
	  $(BUSTED) -o plainTerminal 2>&1 | tee build/busted-valgrind.log; status=$${PIPESTATUS[0]}; \
	  cat build/valgrind.log; exit $$status

# Static analysis of src/ with zero findings: gcc -fanalyzer, clang-tidy's
# static analyzer (clang-analyzer-*) and cppcheck. Errors are raised through
# cr_error, declared noreturn, so the analyzers see the real paths. cppcheck
# checks the GCC configuration (-D__GNUC__: the noreturn attribute) and gets
# LLONG_MAX, which luaconf.h reads from a system header it does not parse.
LINT_CC   ?= gcc
LINT_PKGS  = cppcheck clang-tidy
lint:
	@$(MAKE) --no-print-directory apt PKGS="$(DEB_PKGS) $(LINT_PKGS)"
	@echo "== $(LINT_CC) -fanalyzer =="
	@for f in $(SRCS); do \
	  $(LINT_CC) $(WARN) -O1 -fanalyzer -I$(LUA_INC) -c -o /dev/null $$f || exit 1; \
	done
	@echo "== clang-tidy (clang-analyzer-*) =="
	clang-tidy $(SRCS) --quiet --checks='-*,clang-analyzer-*' --warnings-as-errors='*' -- -std=c99 -I$(LUA_INC)
	@echo "== cppcheck =="
	cppcheck --enable=warning,portability,performance --error-exitcode=1 --inline-suppr --quiet --std=c99 \
	  -D__GNUC__ -DLLONG_MAX=9223372036854775807LL -I$(LUA_INC) --suppress=missingIncludeSystem src/
	@echo "lint: 0 findings"
