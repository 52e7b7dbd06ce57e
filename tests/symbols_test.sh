#!/bin/sh
# The shared library exports its public API and nothing else: the demangled
# names of its defined dynamic symbols must be exactly the list kept in the
# repository. An accidental export (an internal class, a std:: template
# instantiation) or a lost one fails here; a deliberate change of the API
# updates the list in the same commit (docs/api.md, "Symbol visibility").
#
#   symbols_test.sh LIBRARY LIST SONAME
set -eu
library=$1
list=$2
expected_soname=$3
actual=$(mktemp)
trap 'rm -f "$actual"' EXIT
nm -D --defined-only "$library" | awk '{ print $3 }' | c++filt | LC_ALL=C sort -u >"$actual"
if ! diff -u "$list" "$actual"; then
  echo "FAIL: $library exports other symbols than $list (lines with + are exported and not listed," \
       "lines with - are listed and not exported)"
  exit 1
fi
echo "$(wc -l <"$actual") exported symbols, as listed in $list"
soname=$(objdump -p "$library" | awk '/SONAME/ { print $2 }')
if [ "$soname" != "$expected_soname" ]; then
  echo "FAIL: the soname is '$soname', not '$expected_soname'"
  exit 1
fi
echo "soname $soname"
