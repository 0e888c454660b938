#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Builds the test VM: Debian's kernel image (matching linux-headers-amd64,
# fetched with apt-get download, unpacked with dpkg -x) and a busybox
# initramfs holding ctxvm.ko and what tools/vm/stage.sh put in STAGED_ROOT.
# Its /init mounts devtmpfs, proc and sysfs, loads the module, runs every
# /tests/* in name order, unloads the module, prints the new kernel log
# lines and powers off.
#
#   tools/vm/build-initramfs.sh OUTDIR MODULE.ko STAGED_ROOT
#
# Leaves OUTDIR/vmlinuz and OUTDIR/initrd.cpio.gz.
set -eu

[ $# -eq 3 ] || { echo "usage: $0 OUTDIR MODULE.ko STAGED_ROOT" >&2; exit 2; }
out=$1
ko=$2
staged=$3

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

# The kernel: the image package of the headers' version, kept in
# VM_KERNEL_DIR (default OUTDIR) so several VMs share one download.
kdir=${VM_KERNEL_DIR:-$out}
mkdir -p "$kdir"
kdir=$(cd "$kdir" && pwd)
if [ ! -s "$kdir/vmlinuz-$kver" ]; then
	tmp=$(mktemp -d)
	chmod 0777 "$tmp"       # apt's download user writes here
	(cd "$tmp" && apt-get download "linux-image-$kver" >/dev/null)
	dpkg -x "$tmp"/linux-image-"$kver"_*.deb "$tmp/x"
	cp "$tmp/x/boot/vmlinuz-$kver" "$kdir/vmlinuz-$kver"
	rm -rf "$tmp"
fi
ln -sf "$kdir/vmlinuz-$kver" "$out/vmlinuz"

# The initramfs.
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys" "$root/tmp" "$root/tests"
cp -a "$staged/." "$root/"
cp /bin/busybox "$root/bin/busybox"
for app in sh mount umount insmod rmmod lsmod poweroff cat echo dmesg tail wc grep \
	   sleep ls mkdir date env head; do
	ln -s busybox "$root/bin/$app"
done
cp "$ko" "$root/ctxvm.ko"

cat > "$root/init" <<'INIT'
#!/bin/sh
export PATH=/bin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
# a task stuck uninterruptibly this long is a bug (run.sh greps for it)
echo 10 > /proc/sys/kernel/hung_task_timeout_secs 2>/dev/null
echo "CTXVM-VM: booted $(cat /proc/sys/kernel/osrelease)"
before=$(dmesg | wc -l)
if insmod /ctxvm.ko; then
	echo "ok - insmod ctxvm.ko"
else
	echo "not ok - insmod ctxvm.ko"
fi
for t in /tests/*; do
	[ -x "$t" ] || continue
	echo "CTXVM-VM: running $t"
	"$t"
	rc=$?
	echo "CTXVM-VM: $t exited $rc"
	# A failing suite has said `not ok` already; a killed one has not.
	[ "$rc" -lt 128 ] || echo "not ok - $t was killed (status $rc)"

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
echo "$kdir/vmlinuz-$kver $out/initrd.cpio.gz"
