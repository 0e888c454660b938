#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Boots the test VM (qemu TCG) and judges its console.
#
#   tools/vm/run.sh OUTDIR [TIMEOUT_SECONDS]
#
# VM_APPEND: extra kernel command line (default slub_debug=FZPU: red zones,
# poisoning and sanity checks catch what the module does wrong with memory).
#
# Counts the TAP lines the VM prints (`ok ...` / `not ok ...`; a SKIP counts
# as a failure inside the VM, where the module is loaded), fails when the
# console shows BUG:, WARNING:, Oops, Call Trace, a panic, when the VM did
# not print its closing marker, or did not power off within the limit.
# The last line printed is `N passed, N failed`.
set -u

out=${1:?usage: $0 OUTDIR [TIMEOUT]}
limit=${2:-240}
log=$out/console.log

start=$(date +%s.%N)
timeout --kill-after=5 "$limit" qemu-system-x86_64 -accel tcg -m 1024 -smp 2 \
	-nographic -no-reboot -monitor none -serial stdio \
	-kernel "$out/vmlinuz" -initrd "$out/initrd.cpio.gz" \
	-append "console=ttyS0 panic=-1 quiet ${VM_APPEND-slub_debug=FZPU}" </dev/null \
	2>&1 | tr -d '\r' > "$log"
rc=$?
end=$(date +%s.%N)
secs=$(echo "$end $start" | awk '{ printf "%.1f", $1 - $2 }')

grep -E '^(#|ok|not ok|CTXVM-VM|CTXVM-BENCH)' "$log" | grep -v '^#  *RUN\|^#  *OK  ' || true

pass=$(grep -E '^ok ' "$log" | grep -vc '# SKIP' || true)
skip=$(grep -E '^ok ' "$log" | grep -c '# SKIP' || true)
fail=$(grep -cE '^not ok ' "$log" || true)
fail=$((fail + skip))
problems=0
if grep -nE 'BUG:|WARNING:|Oops|Call Trace|Kernel panic|general protection|KFENCE|list_(add|del) corruption|blocked for more than' "$log"; then
	echo "vm-test: the kernel log shows a problem (above)"
	problems=1
fi
if ! grep -q '^CTXVM-VM: done' "$log"; then
	echo "vm-test: the VM did not reach its end marker (see $log)"
	problems=1
fi
if [ "$rc" -ne 0 ]; then
	echo "vm-test: qemu did not power off cleanly within ${limit}s (status $rc)"
	problems=1
fi
echo "vm-test: boot to power-off ${secs}s, $skip skipped, console in $log"
[ "$problems" -eq 0 ] || fail=$((fail + 1))
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
