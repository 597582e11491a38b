#!/usr/bin/env bash
# Instructions per call (callgrind), cache_resource hit vs a hand-written
# memo called through a function. Counts are repeatable, unlike times.
set -euo pipefail
cd "$(dirname "$0")/.."
count() { # case n target -> total instructions
  valgrind --tool=callgrind --callgrind-out-file=/dev/null lua5.4 bench/callgrind_hit.lua "$1" "$2" "$3" 2>&1 |
    awk '/Collected/ { print $4 }'
}
printf '%-10s %14s %14s %7s\n' case cache_resource memo ratio
for c in none string scalars; do
  mine=$(( ($(count $c 200000 cr) - $(count $c 100000 cr)) / 100000 ))
  memo=$(( ($(count $c 200000 memo) - $(count $c 100000 memo)) / 100000 ))
  printf '%-10s %14d %14d %6.2fx\n' $c "$mine" "$memo" "$(echo "$mine / $memo" | bc -l)"
done
