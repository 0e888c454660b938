#!/usr/bin/env bash
# make bench: speed, measured side by side in this one run.  Not a test:
# nothing here fails for being slow; the targets are printed next to the numbers.
set -eu
cd "$(dirname "$0")/.."
B=${BUILD:-build}
best() { sort -n | head -n 1; }
wall() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null 2>&1 || true; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000 )); }

echo "== interpreter: Fibonacci mod p, 10^7 steps (best of 3)"
native_s=$(for i in 1 2 3; do $B/bench/fib_native 10000000 | awk '{print $2}'; done | best)
native_val=$($B/bench/fib_native 10000000 | awk '{print $1}')
json=$($B/ctxvm run tests/bench/fib.masm --backend inproc --json 2>/dev/null)
gas=$(printf '%s' "$json" | sed -n 's/.*"gas_used":\([0-9]*\).*/\1/p')
top=$(printf '%s' "$json" | sed -n 's/.*"stack":\[\([0-9]*\),.*/\1/p')
vm_us=$(for i in 1 2 3; do wall $B/ctxvm run tests/bench/fib.masm --backend inproc; done | best)
base_us=$(for i in 1 2 3; do wall $B/ctxvm run tests/bench/call.masm --backend inproc; done | best)
awk -v g="$gas" -v us="$vm_us" -v n="$native_s" -v top="$top" -v nv="$native_val" 'BEGIN {
	s = us / 1e6;
	printf "ctxvm inproc: %.3f s for %d instructions = %.0f M instructions/s (target >= 200)\n", s, g, g / s / 1e6;
	printf "native C:     %.3f s\n", n;
	printf "ratio ctxvm/native: %.2fx (target <= 5x); same result: %s\n", s / n, (top == nv ? "yes" : "NO");
}'

echo "== contexts: call + return of an empty procedure, 1000 calls (best of 3)"
floor=$($B/bench/floor)
few=$(echo "$floor" | awk '/fork_exit_wait_us/ {print $2}')
pipe=$(echo "$floor" | awk '/pipe_roundtrip_us/ {print $2}')
# Per call = (1000 calls - the empty program) / 1000: start-up is not a call.
per_call() {
	local full empty
	full=$(for i in 1 2 3 4 5; do wall taskset -c 0 $B/ctxvm run tests/bench/call.masm --backend "$1"; done | best)
	empty=$(for i in 1 2 3 4 5; do wall taskset -c 0 $B/ctxvm run tests/bench/empty.masm --backend "$1"; done | best)
	echo $((full - empty))
}
user_us=$(per_call user)
inproc_us=$(per_call inproc)
bwrap_us=""
if command -v bwrap >/dev/null; then
	t0=$(date +%s%N)
	for i in $(seq 100); do bwrap --ro-bind / / --unshare-all /bin/true 2>/dev/null || true; done
	t1=$(date +%s%N)
	bwrap_us=$(( (t1 - t0) / 100000 ))
fi
awk -v u="$user_us" -v ip="$inproc_us" -v f="$few" -v p="$pipe" -v bw="$bwrap_us" 'BEGIN {
	uc = u / 1000; ic = ip / 1000;
	printf "user backend:  %.1f us per call + return (a fresh sandboxed process each)\n", uc;
	printf "inproc:        %.1f us per call\n", ic;
	printf "fork+exit+wait: %.1f us; pipe round trip: %.1f us (one CPU)\n", f, p;
	printf "ratio user call / fork+exit+wait: %.2fx (target <= 1.5x)\n", uc / f;
	if (bw != "") printf "bwrap /bin/true: %.1f us per spawn; ratio user call / bwrap: %.2fx\n", bw, uc / bw;
	else print "bwrap: not installed (tools/install-deps.sh bench)";
}'
