#!/usr/bin/env bash
# builder/build-iso.sh — `make iso`: dist/recovery.iso, a hybrid live ISO (BIOS and UEFI, Secure
# Boot included; CD and USB stick) that boots Debian 12 into the recovery TUI.
#
# Steps, and what each costs:
#   1. root file system (build-rootfs.sh, 3-6 min): cached in $ISO_CACHE/rootfs-KEY, KEY being a
#      hash of what built it (iso/packages.txt, iso/initramfs/, build-rootfs.sh, the Debian
#      sources), so a code-only rebuild skips it. Delete it to take newer Debian packages.
#   2. signed EFI boot loaders (shim, MokManager, GRUB) fetched with `apt-get download` and unpacked
#      into $ISO_CACHE/efi-VERSIONS (seconds, once).
#   3. squashfs layers ($SQUASHFS_COMP: zstd by default, fast to build and to boot; xz for
#      releases, smaller): the Debian system (minutes, cached next to the root file system) and
#      our files (seconds: iso/rootfs/, iso/units.txt, dist/recovery.d as /opt/recovery).
#   4. kernel and initrd under live/, the initrd with the build's UUID appended, GRUB menu, ESP
#      image sized from its files, xorriso.
#
# Environment: ISO_CACHE (default /var/cache/recovery-iso), SQUASHFS_COMP (zstd|xz),
# ISO_OUT (default dist/recovery.iso), DEBIAN_SOURCES (see debian-sources.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
cache=${ISO_CACHE:-/var/cache/recovery-iso}
comp=${SQUASHFS_COMP:-zstd}
out=${ISO_OUT:-$repo/dist/recovery.iso}
bundle=$repo/dist/recovery.d

die() { echo "build-iso.sh: $*" >&2; exit 1; }
step() { printf '[%4ds] %s\n' "$SECONDS" "$*"; }

[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap, and file ownership inside the image)"
[ -x "$bundle/recovery" ] || die "$bundle/recovery missing: run 'make binary' first"
case "$comp" in
    zstd) squashfs_opts=(-comp zstd -Xcompression-level 15) ;;
    xz) squashfs_opts=(-comp xz -Xbcj x86 -b 1M) ;;
    *) die "SQUASHFS_COMP must be zstd or xz, not '$comp'" ;;
esac
for tool in mmdebstrap mksquashfs xorriso grub-mkimage mkfs.vfat mcopy cpio; do
    command -v "$tool" >/dev/null || die "$tool not found: run 'make iso-deps'"
done
mkdir -p "$cache" "$(dirname "$out")"

# 1. The root file system, cached by what built it.
key=$({ cat "$repo/iso/packages.txt" "$repo/iso/initramfs/"* "$here/build-rootfs.sh" \
            "$here/debian-sources.sh"; "$here/debian-sources.sh"; } | sha256sum | cut -c1-16)
rootfs=$cache/rootfs-$key
if [ -d "$rootfs" ]; then
    step "root file system: cached $rootfs"
else
    step "root file system: building $rootfs (takes a few minutes)"
    rm -rf "$rootfs.tmp"
    "$here/build-rootfs.sh" "$rootfs.tmp" > "$cache/rootfs-$key.log" 2>&1 \
        || die "build-rootfs.sh failed; its log: $cache/rootfs-$key.log"
    mv "$rootfs.tmp" "$rootfs"
    # Keep this one and the one before it (a branch switch back should not cost a rebuild).
    ls -dt "$cache"/rootfs-???????????????? | tail -n +3 | xargs -r rm -rf
    rm -f "$cache"/base-*
fi

# 2. Debian's signed boot loaders, at the versions the sources offer now.
efi_packages=(shim-signed shim-helpers-amd64-signed grub-efi-amd64-signed)
versions=$(apt-cache show --no-all-versions "${efi_packages[@]}" | awk '/^Version:/ { print $2 }' | paste -sd_ -)
[ -n "$versions" ] || die "apt knows no ${efi_packages[*]}: run apt-get update"
efi=$cache/efi-$(sha256sum <<<"$versions" | cut -c1-16)
if [ ! -d "$efi" ]; then
    step "EFI boot loaders: fetching ${efi_packages[*]}"
    rm -rf "$efi.tmp" && mkdir -p "$efi.tmp/debs"
    (cd "$efi.tmp/debs" && apt-get download -q "${efi_packages[@]}" >/dev/null 2>&1) \
        || die "apt-get download ${efi_packages[*]} failed"
    for deb in "$efi.tmp"/debs/*.deb; do dpkg-deb -x "$deb" "$efi.tmp/root"; done
    mv "$efi.tmp" "$efi"
fi
shim=$efi/root/usr/lib/shim/shimx64.efi.signed
mokmanager=$efi/root/usr/lib/shim/mmx64.efi.signed
grub_efi=$efi/root/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed
for f in "$shim" "$mokmanager" "$grub_efi"; do [ -f "$f" ] || die "$f missing from the packages"; done

# 3. Two squashfs layers, stacked by live-boot with overlayfs (it mounts every live/*.squashfs,
# the later name on top): filesystem.squashfs is the Debian system, cached beside its root file
# system because compressing 500 MB takes minutes; recovery.squashfs holds our files (iso/rootfs/,
# the masks of iso/units.txt, dist/recovery.d as /opt/recovery) and takes seconds. So a code or
# configuration change rebuilds only the small layer.
work=$(mktemp -d "$cache/work.XXXXXX")
trap 'rm -rf "$work"' EXIT
medium=$work/medium
mkdir -p "$medium/live" "$medium/.disk" "$medium/boot/grub"

kernels=("$rootfs"/boot/vmlinuz-*)
[ "${#kernels[@]}" = 1 ] || die "expected one kernel in the root file system, found ${#kernels[*]}"
kver=${kernels[0]##*/vmlinuz-}
cp "$rootfs/boot/vmlinuz-$kver" "$medium/live/vmlinuz"
cp "$rootfs/boot/initrd.img-$kver" "$medium/live/initrd.img"

# Boot order (iso/boot-files.txt): the files the boot reads go first in their layer (mksquashfs
# -sort), so that the initrd's prefetch (iso/initrd/scripts/live-bottom/prefetch) reads them in a
# few large requests from the front of the layer instead of the whole layer. front_of prints how
# many bytes of the layer they take: the size of a squashfs of those files alone, plus a margin.
boot_order() {  # LAYER SOURCE-DIR SORT-FILE
    awk -v l="$1" '$1 == l { print $2 }' "$repo/iso/boot-files.txt" | while read -r p; do
        if [ -f "$2/$p" ] && [ ! -L "$2/$p" ]; then printf '%s\n' "$p"; fi
    done > "$3.list"
    sed 's/$/ 1/' "$3.list" > "$3"
}
front_of() {  # SOURCE-DIR SORT-FILE
    local tree=$work/front
    rm -rf "$tree" && mkdir "$tree"
    (cd "$1" && cpio -pdm --quiet "$tree" < "$2.list")
    mksquashfs "$tree" "$tree.squashfs" -noappend -no-progress -quiet "${squashfs_opts[@]}" \
        2> >(grep -v 'xattr prefix' >&2) >/dev/null
    echo $(( $(stat -c %s "$tree.squashfs") * 21 / 20 + (1 << 20) ))
    rm -rf "$tree" "$tree.squashfs"
}
boot_order system "$rootfs" "$work/system.sort"
base=$cache/base-$key-$comp-$(sha256sum < "$work/system.sort" | cut -c1-8).squashfs
if [ -f "$base" ] && [ -f "$base.front" ]; then
    step "system layer: cached $base"
else
    step "system layer: compressing the root file system ($comp, takes a few minutes)"
    # Kernel and initrd boot from the medium; inside the squashfs they would be dead weight.
    mksquashfs "$rootfs" "$base.tmp" -noappend -no-progress -quiet "${squashfs_opts[@]}" \
        -sort "$work/system.sort" \
        -wildcards -e 'boot/vmlinuz-*' 'boot/initrd.img-*' vmlinuz initrd.img vmlinuz.old \
        initrd.img.old 'var/cache/apt/*' 'var/lib/apt/lists/*' 'tmp/*' \
        2> >(grep -v 'xattr prefix' >&2)
    front_of "$rootfs" "$work/system.sort" > "$base.front"
    mv "$base.tmp" "$base"
    ls -t "$cache"/base-*.squashfs | tail -n +3 | while read -r old; do rm -f "$old" "$old.front"; done
fi
ln "$base" "$medium/live/filesystem.squashfs"

step "recovery layer"
layer=$work/layer
# /etc/network: live-boot writes etc/network/interfaces there and complains when it is missing.
mkdir -p "$layer/opt" "$layer/etc/systemd/system" "$layer/etc/network"
cp -a "$repo/iso/rootfs/." "$layer/"
cp -a "$bundle" "$layer/opt/recovery"
while read -r action unit; do
    case "$action" in
        ''|'#'*) continue ;;
        mask) ln -sfn /dev/null "$layer/etc/systemd/system/$unit" ;;
        enable)
            # "enable UNIT TARGET": what `systemctl enable` does for a unit wanted by TARGET,
            # done by hand (the layer alone has no unit files for systemctl to read). The unit
            # is ours (iso/rootfs) or Debian's; a name that is neither fails the build.
            read -r name target <<<"$unit"
            [ -n "$target" ] || die "iso/units.txt: 'enable $name' needs the target that wants it"
            if [ -f "$layer/etc/systemd/system/$name" ]; then
                path=/etc/systemd/system/$name
            elif [ -f "$rootfs/lib/systemd/system/$name" ] || [ -f "$rootfs/usr/lib/systemd/system/$name" ]; then
                path=/lib/systemd/system/$name
            else
                die "iso/units.txt: no unit $name in iso/rootfs or the Debian system"
            fi
            mkdir -p "$layer/etc/systemd/system/$target.wants"
            ln -sfn "$path" "$layer/etc/systemd/system/$target.wants/$name"
            ;;
        *) die "iso/units.txt: unknown action '$action' (mask UNIT, or enable UNIT TARGET)" ;;
    esac
done < "$repo/iso/units.txt"

build_uuid=$(cat /proc/sys/kernel/random/uuid)
version=$("$bundle/recovery" --version | awk '{ print $2 }')
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo "+dirty" || true)
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
printf '%s\n' "VERSION=$version" "COMMIT=$commit$dirty" "BUILT=$built" \
    "BUILD_UUID=$build_uuid" "KERNEL=$kver" > "$layer/etc/recovery-release"
# Files from the checkout carry the builder's ownership; on the live system root owns them.
chown -R 0:0 "$layer"
boot_order recovery "$layer" "$work/recovery.sort"
mksquashfs "$layer" "$medium/live/recovery.squashfs" -noappend -no-progress -quiet \
    "${squashfs_opts[@]}" -sort "$work/recovery.sort"

# 4. The medium. The build UUID pins initrd and medium together: live-boot mounts a squashfs only
# from a medium whose .disk/live-uuid-* holds the UUID in the initrd's /conf/uuid.conf, so it never
# boots another stick's live system or one found on a disk of the machine.
step "initrd, GRUB, ESP, ISO"
mkdir -p "$work/initrd-extra/conf"
echo "$build_uuid" > "$work/initrd-extra/conf/uuid.conf"
# iso/initrd/: our scripts for live-boot's phases (scripts/live-bottom/prefetch), added here
# rather than by an initramfs-tools hook so that changing them does not rebuild the root file system.
cp -a "$repo/iso/initrd/." "$work/initrd-extra/"
# What the prefetch reads, in 4 MiB units ("LAYER SKIP COUNT"): each layer's tables (inodes,
# directories, ids: from inode_table_start, superblock byte 64, to bytes_used, byte 40), which
# every lookup needs, then the front of each layer, where the boot's files are.
superblock() { od -An -t u8 -j "$2" -N 8 "$1" | tr -d ' '; }
span() { echo "$1 $(( $2 >> 22 )) $(( (($3 + (1 << 22) - 1) >> 22) - ($2 >> 22) ))"; }
{
    for name in filesystem.squashfs recovery.squashfs; do
        f=$medium/live/$name
        span "$name" "$(superblock "$f" 64)" "$(superblock "$f" 40)"
    done
    span filesystem.squashfs 0 "$(cat "$base.front")"
    span recovery.squashfs 0 "$(front_of "$layer" "$work/recovery.sort")"
} > "$work/initrd-extra/conf/prefetch.conf"
# The kernel unpacks concatenated cpio archives; an uncompressed one must start 4-byte aligned,
# and zero bytes between archives are skipped, so pad the zstd archive with zeros first.
size=$(stat -c %s "$medium/live/initrd.img")
head -c $(( (4 - size % 4) % 4 )) /dev/zero >> "$medium/live/initrd.img"
(cd "$work/initrd-extra" && find conf scripts | cpio --quiet -o -H newc -R 0:0) >> "$medium/live/initrd.img"
echo "$build_uuid" > "$medium/.disk/live-uuid-generic"
echo "recovery $version ($commit$dirty) $built" > "$medium/.disk/info"
cp "$repo/iso/grub.cfg" "$medium/boot/grub/grub.cfg"

# BIOS: GRUB's El Torito image with what the menu needs built in (no module directory on the
# medium). The same image serves USB boot through boot_hybrid.img in the MBR.
grub-mkimage -O i386-pc-eltorito -p /boot/grub -o "$medium/boot/grub/bios.img" \
    biosdisk iso9660 part_msdos part_gpt normal configfile search search_fs_file search_label \
    linux echo test serial terminal sleep reboot halt ls cat true

# UEFI: shim (signed by Microsoft's UEFI CA) as the removable-media path, loading Debian's
# signed GRUB (gcdx64: it finds the medium by /.disk/info and reads boot/grub/grub.cfg), and
# MokManager, which shim starts when a key is to be enrolled. No fbx64.efi: fallback would write
# boot entries into the machine's NVRAM. The FAT image is sized from its files.
mkdir -p "$work/esp/EFI/BOOT"
cp "$shim" "$work/esp/EFI/BOOT/BOOTX64.EFI"
cp "$grub_efi" "$work/esp/EFI/BOOT/grubx64.efi"
cp "$mokmanager" "$work/esp/EFI/BOOT/mmx64.efi"
esp_kib=$(( $(du -sk --apparent-size "$work/esp" | cut -f1) * 11 / 10 + 512 ))
mkfs.vfat -C -n RECOVERYEFI "$work/esp.img" "$esp_kib" >/dev/null
MTOOLS_SKIP_CHECK=1 mcopy -s -i "$work/esp.img" "$work/esp/EFI" ::/

rm -f "$out.tmp"
xorriso -as mkisofs -quiet \
    -iso-level 3 -full-iso9660-filenames -joliet -joliet-long -rational-rock \
    -volid RECOVERY -appid "recovery $version" -publisher "recovery" \
    -partition_offset 16 \
    --grub2-mbr /usr/lib/grub/i386-pc/boot_hybrid.img \
    --mbr-force-bootable \
    -append_partition 2 0xef "$work/esp.img" \
    -c boot/boot.cat \
    -b boot/grub/bios.img -no-emul-boot -boot-load-size 4 -boot-info-table --grub2-boot-info \
    -eltorito-alt-boot -e --interval:appended_partition_2:all:: -no-emul-boot \
    -o "$out.tmp" "$medium"
mv "$out.tmp" "$out"
step "done: $out, $(( $(stat -c %s "$out") / 1024 / 1024 )) MiB, build $build_uuid"
