#!/usr/bin/env bash
# make check: runs the host suites (the command given after the first
# argument), then the test VM (the first argument, a command line), and ends
# with one line "N passed, N failed" summed over both.  Each part's own last
# line is such a total; a part that printed none counts as one failure.
set -u
vm_cmd=$1
shift
B=${BUILD:-build}
mkdir -p "$B"

total() {       # the last "N passed, N failed" line of a log, as "N N"
	grep -E '^[0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1 | awk '{ print $1, $3 }'
}

"$@" 2>&1 | tee "$B/check-host.log"
echo "=== the test VM (make vm-test)"
$vm_cmd 2>&1 | tee "$B/check-vm.log"

pass=0 fail=0
for log in "$B/check-host.log" "$B/check-vm.log"; do
	t=$(total "$log")
	if [ -z "$t" ]; then
		echo "# $log ended without a total: counted as a failure"
		fail=$((fail + 1))
		continue
	fi
	pass=$((pass + ${t% *})) fail=$((fail + ${t#* }))
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
