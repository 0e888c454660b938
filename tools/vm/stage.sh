#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Stages what the test VM runs into ROOT (copied to the initramfs root):
#
#   tools/vm/stage.sh ROOT check|bench STATIC_BIN_DIR
#
# check: /tests/10-kmod_abi_test, 20-conformance (every conformance program on
#        --backend kmod), 30-isolation (the hostile programs on kmod),
#        40-kmod_fuzz (random ioctl sequences, fixed seed).
# bench: /tests/10-bench: call+return on kmod vs the user broker; ioctl vs getppid.
#
# The runner and the test binaries are the host's dynamic ones; their shared
# libraries (from ldd) go along.  Static kselftest binaries come from
# STATIC_BIN_DIR.  Inside, the repository layout is kept under /ctxvm.
set -eu

root=${1:?usage: $0 ROOT check|bench STATIC_BIN_DIR}
what=${2:?}
static=${3:?}
B=${BUILD:-build}
FUZZ_SECONDS=${VM_FUZZ_SECONDS:-120}

rm -rf "$root"
mkdir -p "$root/tests" "$root/ctxvm"

# A binary and every library it loads (none if it is static), at the same paths.
copy_dyn() {
	mkdir -p "$root/ctxvm/$(dirname "$1")"
	cp "$1" "$root/ctxvm/$1"
	for lib in $(ldd "$1" 2>/dev/null | grep -o '/[^ ]*'); do
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
}

script() {
	cat > "$root/tests/$1"
	chmod +x "$root/tests/$1"
}

copy_dyn "$B/ctxvm"
cp -r tests/conformance tests/bench examples "$root/ctxvm/" 2>/dev/null || true
mkdir -p "$root/ctxvm/tests" && mv "$root/ctxvm/conformance" "$root/ctxvm/bench" "$root/ctxvm/tests/"

case "$what" in
check)
	copy_dyn "$B/test/ctxvm"
	copy_dyn "$B/test/tests/conformance_test"
	copy_dyn "$B/test/tests/isolation_test"
	cp "$static/kmod_abi_test" "$root/tests/10-kmod_abi_test"
	cp "$static/kmod_fuzz" "$root/ctxvm/kmod_fuzz"
	script 20-conformance <<'S'
#!/bin/sh
cd /ctxvm && CTXVM=build/ctxvm CTXVM_BACKENDS=kmod CTXVM_TEST_TIMEOUT=120 \
	build/test/tests/conformance_test
S
	script 30-isolation <<'S'
#!/bin/sh
cd /ctxvm && CTXVM_ISOLATION_BACKEND=kmod build/test/tests/isolation_test
S
	script 40-kmod_fuzz <<S
#!/bin/sh
/ctxvm/kmod_fuzz --seed 1 --seconds $FUZZ_SECONDS --procs 4
S
	;;
bench)
	cp "$static/kmod_rt" "$root/ctxvm/kmod_rt"
	script 10-bench <<'S'
#!/bin/sh
cd /ctxvm && ./kmod_rt build/ctxvm tests/bench/call.masm tests/bench/empty.masm
S
	;;
*) echo "$0: check or bench" >&2; exit 2 ;;
esac
