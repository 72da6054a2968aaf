#!/usr/bin/env bash
# builder/build-rootfs.sh OUTDIR — builds the live system's root file system from Debian packages
# into OUTDIR (a directory tree, then cached by build-iso.sh under a key of what built it).
#
# Holds everything that takes minutes and changes rarely: the packages of iso/packages.txt, the
# kernel and its initramfs. Our own files (the binary, iso/rootfs/ configuration) are added per
# build by build-iso.sh on a hard-linked copy, so a code-only change does not come back here.
# Everything this script reads is part of the cache key (see build-iso.sh): if you make it read
# another file, add that file to the key.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
out=${1:?usage: build-rootfs.sh OUTDIR}

[ "$(id -u)" = 0 ] || { echo "build-rootfs.sh: needs root (mmdebstrap runs in root mode)" >&2; exit 1; }
[ ! -e "$out" ] || { echo "build-rootfs.sh: $out exists; give a new path" >&2; exit 1; }

packages=$(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$repo/iso/packages.txt" | sed '/^$/d' | paste -sd, -)
mapfile -t sources < <("$here/debian-sources.sh")
# The release itself: the suite of the first source that is not -updates or -security.
suite=$(printf '%s\n' "${sources[@]}" | awk '$3 !~ /-(updates|security)$/ { print $3; exit }')

# dpkg path filters: files a recovery system never reads are not even unpacked. Modules: sound,
# cameras and TV cards, wireless and bluetooth, GPUs that need non-free firmware to show anything
# (the console then runs on the firmware's frame buffer), and drivers for lab hardware. Storage,
# USB, network cards, HID and the remaining GPUs stay. Both /lib and /usr/lib, because Debian 12's
# packages still ship /lib paths while the system is merged-/usr.
filters=(
    'path-exclude=/usr/share/man/*'
    'path-exclude=/usr/share/info/*'
    'path-exclude=/usr/share/doc/*'
    'path-include=/usr/share/doc/*/copyright'
    'path-exclude=/usr/share/locale/*'
    'path-exclude=/usr/share/i18n/*'
    'path-exclude=/usr/share/lintian/*'
    'path-exclude=/usr/share/bash-completion/*'
    'path-exclude=/usr/share/zsh/*'
    # lvm2's initramfs hook copies its udev rules into the initramfs, where they activate every
    # volume group of the machine we rescue before our system is up; our root is a squashfs,
    # not LVM, so the initramfs needs none of it.
    'path-exclude=/usr/share/initramfs-tools/hooks/lvm2'
)
for mods in /lib/modules /usr/lib/modules; do
    for tree in sound drivers/media drivers/net/wireless net/wireless net/mac80211 \
        net/bluetooth drivers/bluetooth drivers/gpu/drm/amd drivers/gpu/drm/radeon \
        drivers/gpu/drm/nouveau drivers/infiniband drivers/staging drivers/iio drivers/isdn \
        drivers/net/can drivers/net/wwan drivers/net/ethernet/mellanox drivers/comedi; do
        filters+=("path-exclude=$mods/*/kernel/$tree/*")
    done
done
dpkgopts=()
for f in "${filters[@]}"; do dpkgopts+=(--dpkgopt="$f"); done

# Before any package is unpacked: the initramfs is built once (a deferred trigger at the end of
# the install) and must be zstd; MODULES=most because the machine that boots it is unknown.
# iso/initramfs/prune-modules then takes out of "most" what finding the medium never needs.
setup_hook='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/etc/initramfs-tools/hooks" && printf "%s\n" "COMPRESS=zstd" "MODULES=most" > "$1/etc/initramfs-tools/conf.d/recovery.conf"'

# After the install: usrmerge (and perl, which only it needs, with its three perl libraries) cost
# ~47 MB and nothing at run time uses them. mmdebstrap brings usrmerge in while it sets up the
# essential packages, before usr-is-merged can satisfy init-system-helpers. dpkg (not apt) purges
# them, all at once, so the build fails loudly if any other package came to depend on one of them.
customize_hook='set -e
purge=""
for p in usrmerge libfile-find-rule-perl libnumber-compare-perl libtext-glob-perl \
         perl perl-modules-5.36 libperl5.36; do
    if chroot "$1" dpkg-query -W -f="\${Status}" "$p" 2>/dev/null | grep -q "ok installed"; then
        purge="$purge $p"
    fi
done
[ -z "$purge" ] || chroot "$1" dpkg --purge $purge
rm -rf "$1"/var/cache/apt/*.bin "$1"/var/lib/apt/lists/* "$1"/var/log/*.log "$1"/var/log/apt/*
'

mmdebstrap --mode=root --format=directory --variant=minbase \
    --include="$packages" \
    --aptopt='APT::Install-Recommends "false"' \
    --aptopt='APT::Install-Suggests "false"' \
    "${dpkgopts[@]}" \
    --setup-hook="$setup_hook" \
    --setup-hook="copy-in $repo/iso/initramfs/prune-modules /etc/initramfs-tools/hooks/" \
    --customize-hook="$customize_hook" \
    "$suite" "$out" "${sources[@]}"

ls "$out"/boot/vmlinuz-* "$out"/boot/initrd.img-* >/dev/null
