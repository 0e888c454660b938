#!/usr/bin/env bash
# Installs what a fresh Debian 12 lacks for one purpose: base | fuzz | lint | bench | module | vm.
# Only missing packages are installed; as non-root it names them and fails.
set -euo pipefail

want=()
case "${1:-base}" in
base) want=(build-essential pkg-config libsodium-dev libseccomp-dev libcap-dev linux-source-6.1 xz-utils) ;;
fuzz) want=(clang libclang-rt-14-dev) ;;
lint) want=(cppcheck sparse linux-headers-amd64) ;;
bench) want=(bubblewrap) ;;
module) want=(linux-headers-amd64 sparse) ;;
vm) want=(qemu-system-x86 busybox-static cpio linux-headers-amd64 sparse kmod) ;;
*) echo "usage: $0 base|fuzz|lint|bench|module|vm" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "ctxvm: missing Debian packages: ${missing[*]}" >&2
	echo "ctxvm: install them with: sudo apt-get install ${missing[*]}" >&2
	exit 1
fi
echo "ctxvm: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
