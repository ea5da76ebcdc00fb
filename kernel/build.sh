#!/usr/bin/env bash
# Build berth's guest kernel (vmlinux) from Debian's linux-source-6.1.
#
#   kernel/build.sh            build (or reuse) and print the vmlinux path as the last line
#
# The result is cached under $BERTH_CACHE/kernel/linux-<source version>-<hash>/ (vmlinux and
# the full .config beside it), the hash over the config fragment and kernel/patches/*.patch
# (applied in name order to the unpacked source); a second run with nothing changed is a
# cache hit.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../scripts/lib/common.sh
. "$here/../scripts/lib/common.sh"

fragment="$here/microvm.config"
required="$here/required.txt"

need_pkgs linux-source-6.1 build-essential bc bison flex libelf-dev libssl-dev xz-utils

src_version=$(dpkg-query -W -f='${Version}' linux-source-6.1)
patches=()
for p in "$here"/patches/*.patch; do [ -e "$p" ] && patches+=("$p"); done
patch_hash=$( (for p in "${patches[@]}"; do basename "$p"; cat "$p"; done) | sha256sum | cut -c1-12)
frag_hash=$( (cat "$fragment"; echo "$patch_hash") | sha256sum | cut -c1-12)
cache=$(berth_cache_dir)/kernel
out="$cache/linux-$src_version-$frag_hash"
mkdir -p "$cache"

if [ -s "$out/vmlinux" ] && [ -s "$out/.config" ]; then
    berth_log "guest kernel: cache hit ($out)"
    echo "$out/vmlinux"
    exit 0
fi

# One build at a time per cache.
exec 9>"$cache/.lock"
flock 9
if [ -s "$out/vmlinux" ]; then echo "$out/vmlinux"; exit 0; fi

need_pkgs patch
# The source, unpacked and patched once per patch set.
tree="$cache/src/linux-$src_version-$patch_hash"
if [ ! -f "$tree/.berth-unpacked" ]; then
    berth_log "unpacking linux-source $src_version (${#patches[@]} patches)"
    rm -rf "$tree" && mkdir -p "$tree"
    tar -xJf /usr/src/linux-source-6.1.tar.xz -C "$tree" --strip-components=1
    for p in "${patches[@]}"; do
        patch -s -p1 -F0 --forward --batch --no-backup-if-mismatch -d "$tree" <"$p" \
            || berth_die "kernel patch $(basename "$p") does not apply to linux-source $src_version"
    done
    touch "$tree/.berth-unpacked"
fi

build=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$build"' EXIT
berth_log "configuring (allnoconfig + $(basename "$fragment"))"
make -s -C "$tree" O="$build" KCONFIG_ALLCONFIG="$fragment" allnoconfig >&2
"$here/check-config" "$build/.config" "$required" >&2
berth_log "building vmlinux with $(nproc) jobs (a few minutes)"
start=$(date +%s)
make -s -C "$tree" O="$build" -j"$(nproc)" vmlinux >&2
berth_log "built in $(( $(date +%s) - start )) s"

staging="$out.tmp.$$"
rm -rf "$staging" && mkdir -p "$staging"
cp "$build/vmlinux" "$staging/vmlinux"
cp "$build/.config" "$staging/.config"
rm -rf "$out" && mv "$staging" "$out"
echo "$out/vmlinux"
