#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Builds the test VM: Debian's kernel image (matching linux-headers-amd64,
# fetched with apt-get download, unpacked with dpkg -x) and a busybox
# initramfs holding ctxvm.ko and static test binaries.  Its /init mounts
# devtmpfs, proc and sysfs, loads the module, runs every /tests/* binary,
# unloads the module, prints the new kernel log lines and powers off.
#
#   tools/vm/build-initramfs.sh OUTDIR MODULE.ko TEST_BINARY...
#
# Leaves OUTDIR/vmlinuz and OUTDIR/initrd.cpio.gz.
set -eu

[ $# -ge 2 ] || { echo "usage: $0 OUTDIR MODULE.ko [TEST...]" >&2; exit 2; }
out=$1
ko=$2
shift 2

kver=$(dpkg-query -W -f='${Depends}' linux-headers-amd64 |
	sed -n 's/.*linux-headers-\([0-9][^ ,]*-amd64\).*/\1/p')
[ -n "$kver" ] || { echo "$0: linux-headers-amd64 is not installed" >&2; exit 1; }
modver=$(modinfo -F vermagic "$ko" 2>/dev/null | cut -d' ' -f1 || true)
if [ -n "$modver" ] && [ "$modver" != "$kver" ]; then
	echo "$0: $ko is built for $modver, the image is $kver" >&2
	exit 1
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)

# The kernel: the image package of the headers' version.
if [ ! -s "$out/vmlinuz-$kver" ]; then
	tmp=$(mktemp -d)
	(cd "$tmp" && apt-get download "linux-image-$kver" >/dev/null)
	dpkg -x "$tmp"/linux-image-"$kver"_*.deb "$tmp/x"
	cp "$tmp/x/boot/vmlinuz-$kver" "$out/vmlinuz-$kver"
	rm -rf "$tmp"
fi
ln -sf "vmlinuz-$kver" "$out/vmlinuz"

# The initramfs.
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys" "$root/tmp" "$root/tests"
cp /bin/busybox "$root/bin/busybox"
for app in sh mount umount insmod rmmod lsmod poweroff cat echo dmesg tail wc grep \
	   sleep ls mkdir date; do
	ln -s busybox "$root/bin/$app"
done
cp "$ko" "$root/ctxvm.ko"
for t in "$@"; do
	cp "$t" "$root/tests/"
done

cat > "$root/init" <<'INIT'
#!/bin/sh
export PATH=/bin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "CTXVM-VM: booted $(cat /proc/sys/kernel/osrelease)"
before=$(dmesg | wc -l)
pass=0
fail=0
if insmod /ctxvm.ko; then
	echo "ok - insmod ctxvm.ko"
	pass=$((pass + 1))
else
	echo "not ok - insmod ctxvm.ko"
	fail=$((fail + 1))
fi
for t in /tests/*; do
	[ -x "$t" ] || continue
	echo "CTXVM-VM: running $t"
	if "$t"; then
		echo "CTXVM-VM: $t exited 0"
	else
		echo "CTXVM-VM: $t exited $?"
	fi
done
if rmmod ctxvm; then
	echo "ok - rmmod ctxvm"
else
	echo "not ok - rmmod ctxvm"
fi
echo "CTXVM-VM: kernel log since insmod:"
dmesg | tail -n +$((before + 1))
echo "CTXVM-VM: done"
poweroff -f
INIT
chmod +x "$root/init"

(cd "$root" && find . | cpio -o -H newc --quiet) | gzip -1 > "$out/initrd.cpio.gz"
echo "$out/vmlinuz-$kver $out/initrd.cpio.gz"
