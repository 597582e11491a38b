#!/usr/bin/env bash
# Instructions per call (callgrind), cache_resource hit vs a hand-written
# memo called through a function. Counts are repeatable, unlike times.
set -euo pipefail
cd "$(dirname "$0")/.."
count() { # case n target -> total instructions
  valgrind --tool=callgrind --callgrind-out-file=/dev/null lua5.4 bench/callgrind_hit.lua "$1" "$2" "$3" 2>&1 |
    awk '/Collected/ { print $4 }'
}
per_call() { echo $(( ($(count "$1" 200000 "$2") - $(count "$1" 100000 "$2")) / 100000 )); }
printf '%-10s %14s %14s %7s %16s\n' case cache_resource memo ratio 'no-op C function'
for c in none string scalars; do
  mine=$(per_call $c cr); memo=$(per_call $c memo); floor=$(per_call $c floor)
  printf '%-10s %14d %14d %6.2fx %16d\n' $c "$mine" "$memo" "$(awk -v a="$mine" -v b="$memo" 'BEGIN { print a / b }')" "$floor"
done
