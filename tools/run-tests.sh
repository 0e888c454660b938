#!/usr/bin/env bash
# Runs every test binary given, shows its TAP output, and ends with one line
# "N passed, N failed[, N skipped]" summed over all of them.  A suite that
# crashes or exits non-zero without reporting a failure counts as one failure.
set -u

pass=0 fail=0 skip=0
export CTXVM_BACKENDS="${CTXVM_BACKENDS:-inproc user}"
for bin in "$@"; do
	name=$(basename "$bin")
	echo "=== $name"
	out=$("$bin" 2>&1)
	rc=$?
	printf '%s\n' "$out"
	p=$(printf '%s\n' "$out" | grep -E '^ok [0-9]+' | grep -vc '# SKIP' || true)
	s=$(printf '%s\n' "$out" | grep -E '^ok [0-9]+' | grep -c '# SKIP' || true)
	f=$(printf '%s\n' "$out" | grep -cE '^not ok [0-9]+' || true)
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		echo "# $name exited with status $rc without a failing test: counted as a failure"
		f=1
	fi
	echo "=== $name: $p passed, $f failed, $s skipped"
	pass=$((pass + p)) fail=$((fail + f)) skip=$((skip + s))
done
if [ "$skip" -gt 0 ]; then
	echo "$pass passed, $fail failed, $skip skipped"
else
	echo "$pass passed, $fail failed"
fi
[ "$fail" -eq 0 ]
