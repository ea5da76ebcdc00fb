# Shared shell helpers for berth's scripts. Source it; do not run it.
# shellcheck shell=bash

# Where berth caches what it builds or downloads (guest kernel, lab kernel, images).
berth_cache_dir() {
    echo "${BERTH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/berth}"
}

berth_log() { echo "berth: $*" >&2; }
berth_die() { echo "berth: error: $*" >&2; exit 1; }

# need_pkgs PKG...: install the Debian packages that are missing, idempotently.
# `apt-get update` runs at most once per process, and only when something is missing.
need_pkgs() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || berth_die "missing packages (${missing[*]}); run as root to install them"
    berth_log "installing ${missing[*]}"
    if [ -z "${BERTH_APT_UPDATED:-}" ]; then
        apt-get update -q >&2 || berth_die "apt-get update failed"
        export BERTH_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
        || berth_die "apt-get install ${missing[*]} failed"
}

# The virtio-fs backend for microVM volumes and bind mounts: virtiofsd from crates.io
# (Debian 12 does not package it), built once into the cache. Prints its path.
VIRTIOFSD_VERSION=1.14.0
need_virtiofsd() {
    local root bin
    root="$(berth_cache_dir)/virtiofsd-$VIRTIOFSD_VERSION"
    bin="$root/bin/virtiofsd"
    if [ ! -x "$bin" ]; then
        need_pkgs libseccomp-dev libcap-ng-dev pkg-config
        berth_log "building virtiofsd $VIRTIOFSD_VERSION from crates.io (once; a few minutes)"
        mkdir -p "$root"
        (
            exec 9>"$root.lock"
            flock 9
            [ -x "$bin" ] || cargo install --quiet --locked --version "$VIRTIOFSD_VERSION" \
                --root "$root" virtiofsd >&2
        ) || berth_die "cargo install virtiofsd $VIRTIOFSD_VERSION failed"
    fi
    echo "$bin"
}
