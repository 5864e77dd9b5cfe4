# shellcheck shell=bash
# Host-side preparation of the initiator VM, sourced by run-guest.sh.
#
# Everything is built from Debian packages of the machine's own apt sources and cached in
# $VM_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/rewind-vm):
#   debs/                    packages fetched with apt-get download (kernel, busybox-static,
#                            open-iscsi and its two private libraries)
#   kernel-<kver>/           the extracted kernel package (vmlinuz + modules), depmod'ed
#   root-<pkg>/              other extracted packages
#   initramfs-<key>.cpio     the base initramfs; <key> hashes every input, so it is rebuilt
#                            only when something changes
# Host tools used: apt-get, apt-cache, dpkg-deb, depmod, modprobe (kmod), ldd, sha256sum,
# and the e2fsprogs binaries installed on the host (copied into the guest with their libraries).

VM_CACHE=${VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rewind-vm}
VM_MODULES="virtio_pci virtio_net iscsi_tcp sd_mod ext4 crc32c_generic"
# extra packages whose files go into the guest; open-iscsi's own libraries are not on a
# typical host, so they come from the packages too
VM_PKGS="busybox-static open-iscsi libopeniscsiusr libisns0"

vm_log() { echo "[vm $(date +%T)] $*" >&2; }
vm_die() { echo "[vm] FAIL: $*" >&2; exit 3; }

# vm_fetch PKG: print the path of PKG's .deb in the cache, downloading it if needed
vm_fetch() {
    local pkg=$1 deb
    mkdir -p "$VM_CACHE/debs"
    deb=$(find "$VM_CACHE/debs" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n1)
    if [ -z "$deb" ]; then
        vm_log "apt-get download $pkg"
        # as root, apt cannot hand the download to its unprivileged sandbox user in $HOME
        local sandbox=()
        [ "$(id -u)" -ne 0 ] || sandbox=(-o APT::Sandbox::User=root)
        (cd "$VM_CACHE/debs" && apt-get download -q "${sandbox[@]+"${sandbox[@]}"}" "$pkg" >&2) || vm_die "apt-get download $pkg failed"
        deb=$(find "$VM_CACHE/debs" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n1)
    fi
    [ -n "$deb" ] || vm_die "no .deb for $pkg"
    echo "$deb"
}

# vm_extract PKG DIR: unpack PKG into DIR once
vm_extract() {
    local pkg=$1 dir=$2 deb
    [ -f "$dir/.done" ] && return 0
    deb=$(vm_fetch "$pkg")
    rm -rf "$dir"; mkdir -p "$dir"
    dpkg-deb -x "$deb" "$dir" || vm_die "dpkg-deb -x $deb failed"
    touch "$dir/.done"
}

vm_host_tools() {
    local c missing=()
    for c in qemu-system-x86_64 apt-get dpkg-deb depmod modprobe ldd sha256sum mke2fs e2fsck resize2fs; do
        command -v "$c" >/dev/null 2>&1 || missing+=("$c")
    done
    [ ${#missing[@]} -eq 0 ] || vm_die "missing host tools: ${missing[*]} (run: integration/setup.sh)"
}

# vm_kernel: sets VM_KVER, VM_KDIR, VM_KERNEL. The concrete linux-image-<ver>-amd64 package is
# what the linux-image-amd64 meta package points to; it is pinned in $VM_CACHE/kernel.pkg so
# later runs reuse it (delete that file to move on to a newer kernel).
vm_kernel() {
    local pkg
    if [ -n "${VM_KERNEL_PKG:-}" ]; then
        pkg=$VM_KERNEL_PKG
    elif [ -s "$VM_CACHE/kernel.pkg" ]; then
        pkg=$(cat "$VM_CACHE/kernel.pkg")
    else
        pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n1)
        [ -n "$pkg" ] || vm_die "cannot resolve linux-image-amd64 to a kernel package (apt-get update?)"
    fi
    VM_KVER=${pkg#linux-image-}
    VM_KDIR=$VM_CACHE/kernel-$VM_KVER
    if [ ! -f "$VM_KDIR/.done" ]; then
        vm_extract "$pkg" "$VM_KDIR"
        depmod -b "$VM_KDIR" "$VM_KVER" || vm_die "depmod for $VM_KVER failed"
    fi
    echo "$pkg" >"$VM_CACHE/kernel.pkg"
    VM_KERNEL=$VM_KDIR/boot/vmlinuz-$VM_KVER
    [ -f "$VM_KERNEL" ] || vm_die "no kernel image $VM_KERNEL"
}

# vm_copy_bin ROOT FILE [LIBPATH]: copy an ELF binary and the shared libraries it needs
vm_copy_bin() {
    local root=$1 bin=$2 libpath=${3:-} lib
    install -D -m 0755 "$bin" "$root/sbin/$(basename "$bin")"
    while read -r lib; do
        [ -n "$lib" ] && [ ! -e "$root$lib" ] || continue
        install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
    done < <(LD_LIBRARY_PATH=$libpath ldd "$bin" 2>/dev/null \
             | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
}

# vm_initramfs GUEST_DIR: sets VM_INITRAMFS (uncompressed newc cpio, cached by input hash)
vm_initramfs() {
    local gdir=$1 key root pkg m line
    local isr=$VM_CACHE/root-open-iscsi bbr=$VM_CACHE/root-busybox-static
    for pkg in $VM_PKGS; do vm_extract "$pkg" "$VM_CACHE/root-$pkg"; done
    VM_BUSYBOX=$bbr/bin/busybox
    [ -x "$VM_BUSYBOX" ] || vm_die "busybox-static has no bin/busybox"
    key=$( {
        echo "$VM_KVER $VM_MODULES $VM_PKGS"
        find "$VM_CACHE/debs" -maxdepth 1 -name '*.deb' -printf '%f\n' | sort
        cat "$gdir"/* "${BASH_SOURCE[0]}"
        sha256sum "$(command -v mke2fs)" "$(command -v e2fsck)" "$(command -v resize2fs)"
    } | sha256sum | cut -c1-16)
    VM_INITRAMFS=$VM_CACHE/initramfs-$key.cpio
    [ -s "$VM_INITRAMFS" ] && return 0

    vm_log "building the guest initramfs ($key)"
    root=$(mktemp -d "$VM_CACHE/build.XXXXXX")
    mkdir -p "$root"/{bin,sbin,etc/iscsi,proc,sys,dev,run,tmp,mnt,root,var/lib,var/lock,lib/modules}
    install -m 0755 "$VM_BUSYBOX" "$root/bin/busybox"
    for m in $("$VM_BUSYBOX" --list); do
        [ "$m" = busybox ] || ln -sf busybox "$root/bin/$m"
    done
    # open-iscsi from the package, resolving its private libraries from the package as well
    local libs="$VM_CACHE/root-libopeniscsiusr/usr/lib/x86_64-linux-gnu:$VM_CACHE/root-libisns0/usr/lib/x86_64-linux-gnu"
    for m in iscsid iscsiadm; do
        [ -x "$isr/usr/sbin/$m" ] || [ -x "$isr/sbin/$m" ] || vm_die "open-iscsi package has no $m"
        if [ -x "$isr/usr/sbin/$m" ]; then vm_copy_bin "$root" "$isr/usr/sbin/$m" "$libs"
        else vm_copy_bin "$root" "$isr/sbin/$m" "$libs"; fi
    done
    # ldd printed the package libraries' paths inside the cache; put them at their real place
    for m in "$VM_CACHE"/root-libopeniscsiusr/usr/lib/x86_64-linux-gnu/* "$VM_CACHE"/root-libisns0/usr/lib/x86_64-linux-gnu/*; do
        cp -a "$m" "$root/lib/x86_64-linux-gnu/" 2>/dev/null || { mkdir -p "$root/lib/x86_64-linux-gnu"; cp -a "$m" "$root/lib/x86_64-linux-gnu/"; }
    done
    rm -rf "${root:?}$VM_CACHE"
    rmdir -p "$(dirname "$root$VM_CACHE")" 2>/dev/null || true
    mkdir -p "$root/root"
    for m in mke2fs e2fsck resize2fs; do vm_copy_bin "$root" "$(readlink -f "$(command -v "$m")")"; done
    ln -sf mke2fs "$root/sbin/mkfs.ext4"; ln -sf e2fsck "$root/sbin/fsck.ext4"
    [ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$root/etc/"
    # kernel modules with their dependencies, in load order
    : >"$root/etc/modules.order"
    for m in $VM_MODULES; do
        modprobe -d "$VM_KDIR" -S "$VM_KVER" --show-depends "$m" >"$root/tmp/deps" 2>&1 \
            || { cat "$root/tmp/deps" >&2; vm_die "kernel module $m not found"; }
        while read -r line; do
            case $line in insmod\ *) ;; *) continue ;; esac
            line=${line#insmod }; line=${line%% *}
            grep -qxF "$line" "$root/etc/modules.order" || echo "$line" >>"$root/etc/modules.order"
            install -D -m 0644 "$line" "$root$line"
        done <"$root/tmp/deps"
    done
    rm -f "$root/tmp/deps"
    sed -i "s|^$VM_KDIR||" "$root/etc/modules.order"
    if [ -d "$root$VM_KDIR" ]; then
        mkdir -p "$root/lib/modules"; cp -a "$root$VM_KDIR/lib/modules/." "$root/lib/modules/"
        rm -rf "${root:?}$VM_CACHE"
        rmdir -p "$(dirname "$root$VM_CACHE")" 2>/dev/null || true
        mkdir -p "$root/root"
    fi
    cp "$VM_KDIR/lib/modules/$VM_KVER"/modules.{order,builtin,builtin.modinfo} "$root/lib/modules/$VM_KVER/" 2>/dev/null || true
    depmod -b "$root" "$VM_KVER" || vm_die "depmod on the initramfs failed"
    install -m 0755 "$gdir/init" "$root/init"
    install -m 0644 "$gdir/iscsid.conf" "$root/etc/iscsi/iscsid.conf"
    echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
    echo 'root:x:0:' >"$root/etc/group"
    (cd "$root" && find . -mindepth 1 | LC_ALL=C sort | "$VM_BUSYBOX" cpio -o -H newc 2>/dev/null) \
        >"$VM_INITRAMFS.tmp" || vm_die "cpio failed"
    mv "$VM_INITRAMFS.tmp" "$VM_INITRAMFS"
    rm -rf "$root"
    find "$VM_CACHE" -maxdepth 1 -name 'initramfs-*.cpio' ! -name "initramfs-$key.cpio" -delete
    vm_log "initramfs $(du -h "$VM_INITRAMFS" | cut -f1)"
}
