#!/bin/sh
# Run every example under examples/*/main.masm, explain it in one line, show
# its output, and check its final stack.  `make run` uses this; it exits
# non-zero when an example breaks.
#
# Each main.masm carries its own metadata as `#!` comment lines:
#   #! what: one-line explanation
#   #! kernel: kernel.masm          (optional, relative to the example folder)
#   #! expect-stack: a,b,c          (the output starts a,b,c; the rest is 0)
#
# Environment: CTXVM (default build/ctxvm), CTXVM_BACKEND (default auto).
set -u

here=$(cd "$(dirname "$0")/.." && pwd)
ctxvm=${CTXVM:-$here/build/ctxvm}
backend=${CTXVM_BACKEND:-auto}
failed=0
total=0

if [ ! -x "$ctxvm" ]; then
	echo "run-examples: $ctxvm not found; run 'make' first" >&2
	exit 2
fi

for prog in "$here"/examples/*/main.masm; do
	[ -f "$prog" ] || continue
	dir=$(dirname "$prog")
	name=$(basename "$dir")
	what=$(sed -n 's/^#! what: *//p' "$prog" | head -n 1)
	kernel=$(sed -n 's/^#! kernel: *//p' "$prog" | head -n 1)
	expect=$(sed -n 's/^#! expect-stack: *//p' "$prog" | head -n 1)
	total=$((total + 1))

	set -- run "$prog" --backend "$backend"
	if [ -n "$kernel" ]; then
		set -- "$@" --kernel "$dir/$kernel"
	fi

	echo "== $name: $what"
	echo "   \$ ctxvm $*" | sed "s|$here/||g"
	out=$("$ctxvm" "$@" 2>&1)
	rc=$?
	printf '%s\n' "$out" | sed 's/^/   /'

	# The plain output's stack line: 16 numbers separated by spaces.
	got=$(printf '%s\n' "$out" | grep -E '^[0-9]+( [0-9]+){15}$' | head -n 1)
	want=$(printf '%s' "$expect" | tr ',' ' ')
	n=$(printf '%s\n' "$want" | wc -w)
	while [ "$n" -lt 16 ]; do
		want="$want 0"
		n=$((n + 1))
	done
	want=$(printf '%s\n' "$want" | tr -s ' ' | sed 's/^ //')
	if [ "$rc" -eq 0 ] && [ "$got" = "$want" ]; then
		echo "   ok: the stack starts $expect"
	else
		echo "   FAILED (exit $rc): expected the stack to start $expect" >&2
		failed=$((failed + 1))
	fi
	echo
done

echo "examples: $((total - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
