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

echo "== contexts: call + return of an empty procedure"
floor=$($B/bench/floor)
few=$(echo "$floor" | awk '/fork_exit_wait_us/ {print $2}')
pipe=$(echo "$floor" | awk '/pipe_roundtrip_us/ {print $2}')
# The same floor as a dynamically linked program: the runner is static.
few_dyn=$($B/bench/floor-dynamic | awk '/fork_exit_wait_us/ {print $2}')
ncpu=$(nproc)
# Per call = (1000 calls - the empty program) / 1000, best of 5: start-up is
# not a call.  $1 = CPUs the runner may use, then ctxvm's options.
per_call() {
	local cpus=$1 full empty
	shift
	full=$(for i in 1 2 3 4 5; do wall taskset -c "$cpus" $B/ctxvm run tests/bench/call.masm "$@"; done | best)
	empty=$(for i in 1 2 3 4 5; do wall taskset -c "$cpus" $B/ctxvm run tests/bench/empty.masm "$@"; done | best)
	echo $((full - empty))
}
# With a ready pool: (a16 - a0) / 16 from the --trace tree of
# tests/bench/latency.masm, per round; prints "median best" in us.
ready_call() {
	taskset -c 0,1 $B/ctxvm run tests/bench/latency.masm --backend user --pool 32 --trace 2>&1 >/dev/null |
		awk '/ call a0 / { for (i = 1; i <= NF; i++) if ($i == "ms,") a0 = $(i - 1) }
		     / call a16 / { for (i = 1; i <= NF; i++) if ($i == "ms,") print ($(i - 1) - a0) * 1000 / 16 }' |
		sort -n | awk '{ v[NR] = $1 } END { if (NR) printf "%.1f %.1f\n", v[int((NR + 1) / 2)], v[1] }'
}
fresh_us=$(per_call 0 --backend user --pool 0)
inproc_us=$(per_call 0 --backend inproc)
pooled_us=""
ready=""
if [ "$ncpu" -ge 2 ]; then
	pooled_us=$(per_call 0,1 --backend user --pool 4)
	ready=$(ready_call)
fi
bwrap_us=""
if command -v bwrap >/dev/null; then
	t0=$(date +%s%N)
	for i in $(seq 100); do bwrap --ro-bind / / --unshare-all /bin/true 2>/dev/null || true; done
	t1=$(date +%s%N)
	bwrap_us=$(( (t1 - t0) / 100000 ))
fi
awk -v u="$fresh_us" -v ip="$inproc_us" -v pl="$pooled_us" -v rd="$ready" -v f="$few" -v fd="$few_dyn" -v p="$pipe" \
    -v bw="$bwrap_us" 'BEGIN {
	uc = u / 1000;
	printf "user, fresh process:     %7.1f us per call + return (--pool 0, one CPU: fork, lock down, run, exit)\n", uc;
	if (pl != "") {
		split(rd, r, " ");
		printf "user, pooled, back to back: %4.1f us (--pool 4, two CPUs: the pool refills beside the session)\n", pl / 1000;
		printf "user, pooled, one ready: %7.1f us median, %.1f best (--pool 32, two CPUs; timed in the broker)\n", r[1], r[2];
	} else {
		print "user, pooled:            not measured (one CPU: the pool needs a second)";
	}
	printf "inproc:                  %7.1f us per call (one process, UNISOLATED)\n", ip / 1000;
	printf "fork+exit+wait:          %7.1f us static, as the runner is linked (%.1f us dynamic); pipe round trip: %.1f us (one CPU)\n", f, fd, p;
	if (bw != "") printf "bwrap /bin/true:         %7.1f us per spawn\n", bw;
	else print "bwrap: not installed (tools/install-deps.sh bench)";
	printf "ratio fresh call / fork+exit+wait: %.2fx against the static floor, %.2fx against the dynamic one (target <= 1.5x)\n", uc / f, uc / fd;
	if (pl != "") printf "ratio pooled call, one ready / pipe round trip: %.1fx (target <= 3x)\n", r[1] / p;
	if (bw != "") printf "ratio fresh call / bwrap: %.2fx\n", uc / bw;
}'
