#!/usr/bin/env bash
# Build the Quayside runner images without a container registry.
#
#   scripts/build-images.sh [--force] [--refresh-base] [--verbose] [LANGUAGE...]
#
# Machines that run Quayside often have no registry access, so `FROM
# debian:bookworm-slim` cannot be pulled.  Instead we:
#   1. debootstrap a minimal Debian bookworm rootfs (cached as a tarball, so
#      reruns do not download it again) and `docker import` it as the base
#      image (default quayside/base:bookworm);
#   2. build deploy/images/base/Dockerfile on it with `--build-arg BASE=<that
#      base>`: the runner base quayside/runner-base:<VERSION> (user 10001,
#      /work, environment, the `runner-install` helper; no toolchain);
#   3. build deploy/images/<lang>/Dockerfile for each language on the runner
#      base.  The Dockerfiles are the same ones people with a registry use
#      (the runner base's default BASE is debian:bookworm-slim); apt inside
#      `docker build` only needs the Debian mirror.
#
# Builds use `--network host`: their RUN steps are our Dockerfiles fetching
# Debian packages, so they reach the mirror exactly as the host does (its DNS
# and proxy), also on engines run without a bridge network (`--bridge none`,
# as hardened CI hosts and the private engines of our tests are).  Jobs never
# get a network: the runner starts them with `--network none`.
#
# Images are tagged quayside/runner-<lang>:<VERSION>, VERSION being the
# content of deploy/images/VERSION.  Images that already exist are skipped,
# so running the script twice is cheap.  Must run as root (debootstrap).
#
# Quiet: one line per step with its time, each step's output in a log file
# (the folder is named on the first line; a failing step shows its log's
# tail).  --verbose (or QUAYSIDE_VERBOSE=1) prints everything.
#
# Options:
#   --force         rebuild the runner images (base included) even if they
#                   exist (no layer cache, so packages are fetched fresh)
#   --refresh-base  re-run debootstrap and re-import the base image (existing
#                   runner images are kept unless --force is given too)
#   -v, --verbose   print every command's output
#   -h, --help      show this help
#
# Environment:
#   QUAYSIDE_IMAGE_CACHE   where the rootfs tarball is cached
#                          (default /var/cache/quayside)
#   QUAYSIDE_BASE_IMAGE    tag of the imported base (default quayside/base:bookworm)
#   QUAYSIDE_IMAGE_PREFIX  runner image name prefix (default quayside/runner-);
#                          the runner base is <prefix>base:<VERSION>
#   DEBIAN_MIRROR          default http://deb.debian.org/debian
#   DEBIAN_SECURITY_MIRROR default http://deb.debian.org/debian-security
set -euo pipefail

readonly ALL_LANGUAGES=(c cpp python rust go javascript)
readonly SUITE=bookworm

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
source "$REPO_ROOT/scripts/lib.sh"
readonly IMAGES_DIR="$REPO_ROOT/deploy/images"
readonly CACHE_DIR="${QUAYSIDE_IMAGE_CACHE:-/var/cache/quayside}"
readonly BASE_IMAGE="${QUAYSIDE_BASE_IMAGE:-quayside/base:$SUITE}"
readonly IMAGE_PREFIX="${QUAYSIDE_IMAGE_PREFIX:-quayside/runner-}"
readonly MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
readonly SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

FORCE=0
REFRESH_BASE=0
LANGUAGES=()
WORK_DIR=""   # temporary debootstrap directory, removed on exit

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

image_size() { docker image inspect -f '{{.Size}}' "$1" | awk '{ printf "%.0f MB", $1 / 1e6 }'; }

parse_args() {
    local arg lang known
    parse_flags "$@"
    for arg in "${ARGS[@]}"; do
        case $arg in
            --force) FORCE=1 ;;
            --refresh-base) REFRESH_BASE=1 ;;
            -*) die "unknown option: $arg (see --help)" ;;
            *)
                known=0
                for lang in "${ALL_LANGUAGES[@]}"; do
                    [[ $arg == "$lang" ]] && known=1
                done
                (( known )) || die "unknown language: $arg (known: ${ALL_LANGUAGES[*]})"
                LANGUAGES+=("$arg")
                ;;
        esac
    done
    if (( ${#LANGUAGES[@]} == 0 )); then
        LANGUAGES=("${ALL_LANGUAGES[@]}")
    fi
}

preflight() {
    (( EUID == 0 )) || die "must run as root (debootstrap and docker need it)"
    command -v docker >/dev/null || die "docker is not installed"
    docker info >/dev/null 2>&1 || die "cannot talk to the docker daemon (is dockerd running?)"
    [[ -r $IMAGES_DIR/VERSION ]] || die "missing $IMAGES_DIR/VERSION"
    VERSION=$(tr -d '[:space:]' <"$IMAGES_DIR/VERSION")
    [[ $VERSION =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad VERSION in $IMAGES_DIR/VERSION: '$VERSION'"
    readonly VERSION
    RUNNER_BASE="${IMAGE_PREFIX}base:$VERSION"
    readonly RUNNER_BASE
    local lang
    for lang in base "${LANGUAGES[@]}"; do
        [[ -f $IMAGES_DIR/$lang/Dockerfile ]] || die "missing $IMAGES_DIR/$lang/Dockerfile"
    done
}

# Remove the temporary debootstrap tree.  debootstrap mounts /proc and /sys
# inside the target and may leave them mounted if it fails half way, so
# unmount everything below it before deleting (never rm into a live /proc).
cleanup() {
    [[ -n $WORK_DIR && -d $WORK_DIR ]] || return 0
    local mnt
    while read -r mnt; do
        umount -l "$mnt" 2>/dev/null || true
    done < <(awk -v d="$WORK_DIR/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r)
    rm -rf --one-file-system "$WORK_DIR"
}

# Make a debootstrapped tree look like debian:bookworm-slim: no docs, man
# pages or translations (also for packages installed later), apt sources
# that include updates and security, no host identity, no package cache.
slim_rootfs() {
    local root=$1

    cat >"$root/etc/dpkg/dpkg.cfg.d/01-quayside-slim" <<'EOF'
# Keep images small: drop documentation and translations (as debian:*-slim).
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
    # Files already installed by debootstrap predate the excludes.
    find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$root"/usr/share/{groff,info,linda,lintian,locale,man}/*

    cat >"$root/etc/apt/apt.conf.d/01-quayside" <<'EOF'
// No Translation-* indexes, no recommends: smaller downloads and images.
Acquire::Languages "none";
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF
    # debootstrap only configures "bookworm main"; add updates and security
    # so `apt-get upgrade` in the Dockerfiles picks up fixes.
    rm -f "$root/etc/apt/sources.list"
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

    # debootstrap copies the host's resolv.conf and hostname; docker
    # bind-mounts its own at run time, so ship empty files.
    : >"$root/etc/resolv.conf"
    : >"$root/etc/hostname"
    # Downloaded .debs, apt indexes and install logs are not needed.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin \
           "$root"/var/lib/apt/lists/* "$root"/var/log/*.log "$root"/var/log/apt/* \
           "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
}

# make_rootfs ROOT ARCH TARBALL: debootstraps ROOT, slims it and packs it into TARBALL.
make_rootfs() {
    local root=$1 arch=$2 tarball=$3
    debootstrap --variant=minbase --arch="$arch" "$SUITE" "$root" "$MIRROR"
    slim_rootfs "$root"
    # Device nodes, /proc and /sys are provided by docker at run time.
    # Write to a temporary name first so an interrupted run never leaves a
    # truncated tarball that later runs would trust.
    tar --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
        -C "$root" -cf "$tarball.partial" .
    mv -f "$tarball.partial" "$tarball"
    du -h "$tarball"
}

# Debootstrap the base rootfs into the cache, unless a cached tarball exists.
ensure_rootfs_tarball() {
    local tarball=$1 arch=$2
    if [[ -s $tarball ]] && (( ! REFRESH_BASE )); then
        return 0
    fi
    command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
    mkdir -p "$CACHE_DIR"
    # Set here, not inside the step (a subshell), so the EXIT trap can clean it up.
    WORK_DIR=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
    step "debootstrap $SUITE (cached in $CACHE_DIR)" make_rootfs "$WORK_DIR/root" "$arch" "$tarball"
    cleanup
    WORK_DIR=""
}

# import_base TARBALL: the rootfs as image $BASE_IMAGE, replacing the previous one.
import_base() {
    local tarball=$1 old_id
    old_id=$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE" 2>/dev/null || true)
    docker import \
        --change 'CMD ["/bin/bash"]' \
        --change 'ENV LANG=C.UTF-8' \
        --change "LABEL org.opencontainers.image.title=quayside-base org.opencontainers.image.description=\"Debian $SUITE minbase, debootstrapped for Quayside\"" \
        "$tarball" "$BASE_IMAGE"
    remove_if_dangling "$old_id"
}

ensure_base() {
    if image_exists "$BASE_IMAGE" && (( ! REFRESH_BASE )); then
        return 0
    fi
    local arch tarball
    arch=$(dpkg --print-architecture)
    tarball="$CACHE_DIR/rootfs-$SUITE-minbase-$arch.tar"
    ensure_rootfs_tarball "$tarball" "$arch"
    step "docker import $BASE_IMAGE" import_base "$tarball"
}

# After a rebuild the previous image keeps no tag; delete it (only that one
# image, and only if nothing else references it) so --force does not pile
# up dangling images.
remove_if_dangling() {
    local old_id=$1
    [[ -n $old_id ]] || return 0
    local tags
    tags=$(docker image inspect -f '{{len .RepoTags}}' "$old_id" 2>/dev/null || echo 1)
    if [[ $tags == 0 ]]; then
        docker rmi "$old_id" >/dev/null 2>&1 || true
    fi
}

# build_image DIR TAG BASE: deploy/images/DIR/Dockerfile as TAG, on BASE.
build_image() {
    local dir=$1 tag=$2 base=$3 old_id
    old_id=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
    local args=(--network host --build-arg "BASE=$base" --build-arg "VERSION=$VERSION"
                --force-rm --tag "$tag")
    # --force means "really rebuild": without --no-cache docker would just
    # reuse the cached apt layer.
    if (( FORCE )); then args+=(--no-cache); fi
    docker build "${args[@]}" "$IMAGES_DIR/$dir"
    remove_if_dangling "$old_id"
    printf '%s: %s\n' "$tag" "$(image_size "$tag")"
}

main() {
    parse_args "$@"
    preflight
    trap cleanup EXIT
    mkdir -p "$CACHE_DIR"
    # Two concurrent runs would fight over the cache and the tags.
    exec 9>"$CACHE_DIR/build-images.lock"
    flock -n 9 || die "another build-images.sh is running (lock $CACHE_DIR/build-images.lock)"

    local start lang missing=()
    start=$(now_us)
    for lang in "${LANGUAGES[@]}"; do
        if (( FORCE )) || ! image_exists "$IMAGE_PREFIX$lang:$VERSION"; then
            missing+=("$lang")
        fi
    done
    if (( ${#missing[@]} == 0 && ! REFRESH_BASE )); then
        local names=${LANGUAGES[*]}
        (( ${#LANGUAGES[@]} == 1 )) || names="{${names// /,}}"
        log "runner images present: $IMAGE_PREFIX$names:$VERSION (--force rebuilds)"
        return 0
    fi
    ensure_base
    if (( ${#missing[@]} > 0 )); then
        if (( FORCE )) || ! image_exists "$RUNNER_BASE"; then
            step "runner base $RUNNER_BASE" build_image base "$RUNNER_BASE" "$BASE_IMAGE"
        fi
        for lang in "${missing[@]}"; do
            step "runner $IMAGE_PREFIX$lang:$VERSION" \
                build_image "$lang" "$IMAGE_PREFIX$lang:$VERSION" "$RUNNER_BASE"
        done
    fi
    log "runner images ready in $(seconds_since "$start") (sizes: docker images '${IMAGE_PREFIX}*')"
}

main "$@"
