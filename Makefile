SHELL := /bin/bash
# cache_resource — build, test, install. See README.md.
LUA      ?= lua5.4
LUA_INC  ?= /usr/include/lua5.4
BUSTED   ?= $(LUA) /usr/bin/busted
CC       ?= cc
OPT      ?= -O2 -g
WARN      = -std=c99 -Wall -Wextra -Werror -pedantic
CFLAGS_ALL = $(WARN) $(OPT) -fPIC -I$(LUA_INC) $(EXTRA_CFLAGS)
SRCS     := $(wildcard src/*.c)
HDRS     := $(wildcard src/*.h)
DEB_PKGS  = lua5.4 liblua5.4-dev lua-busted luarocks libxxhash-dev lua-cqueues
ASAN_LIB  = $(shell $(CC) -print-file-name=libasan.so)

.PHONY: all deps test asan install clean

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
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

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
