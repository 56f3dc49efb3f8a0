#!/usr/bin/env bash
# scripts/image.sh — `make image`: sandboxd's container image, built with
# buildah from Debian 12 packages, no registry needed.
#
#   scripts/image.sh BIN_DIR
#
# The image is what the node DaemonSet and the gateway Deployment of
# deploy/kubernetes run: sandboxd, sandbox, sandbox-agent, sandbox-spawn, sandbox-transpile (and runsc when
# `make build` built it) in /usr/local/bin, on a Debian 12 (bookworm) root
# file system made by mmdebstrap with the packages a host needs
# (scripts/deps.sh's RUN_PACKAGES: crun and runc, nftables, iproute2,
# lxcfs, fuse3, squashfs-tools-ng, and the host image's python3 stack, git,
# tmux, since a node's sandboxes find the image's /usr as their host image).
# Not FROM scratch: the node runs crun, nft and lxcfs, and its sandboxes
# need that /usr. The root file system is cached by the hash of its
# package list and this script, and so is a base image made from it in
# buildah's storage (sandboxd-base:KEY), so a rebuild after a code change
# only adds the binaries (seconds); the first build downloads the packages
# from the Debian mirror (a few minutes).
#
# Environment:
#   IMAGE       name:tag to commit (default sandboxd:dev, what the
#               manifests name); also tagged sandboxd:$VERSION when VERSION
#               is set
#   ARCHIVE     also write the image to this OCI archive (for
#               `ctr images import`, `skopeo copy`, a registry push)
#   MIRROR      Debian mirror (default http://deb.debian.org/debian)
#   CACHE_DIR   root file system cache (default /var/cache/sandboxd/image)
#   BUILDAH_ROOT, BUILDAH_RUNROOT  buildah's storage (default: its own,
#               /var/lib/containers/storage); the tests use their own
#
# Needs root, buildah and mmdebstrap (scripts/deps.sh run installs both;
# this script installs nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:?usage: scripts/image.sh BIN_DIR}
image=${IMAGE:-sandboxd:dev}
mirror=${MIRROR:-http://deb.debian.org/debian}
cache=${CACHE_DIR:-/var/cache/sandboxd/image}

say() { printf 'image: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

missing=()
for tool in buildah mmdebstrap; do
	command -v "$tool" >/dev/null || missing+=("$tool")
done
[[ ${#missing[@]} -eq 0 ]] || die "needs ${missing[*]} (Debian: apt-get install ${missing[*]}; or scripts/deps.sh run)"
[[ $(id -u) -eq 0 ]] || die "needs root (mmdebstrap's root mode, buildah's storage)"
for f in sandboxd sandbox sandbox-agent sandbox-spawn sandbox-transpile; do
	[[ -x $bin/$f ]] || die "$bin/$f is missing: run make build first"
done

storage=()
[[ -n ${BUILDAH_ROOT:-} ]] && storage+=(--root "$BUILDAH_ROOT")
[[ -n ${BUILDAH_RUNROOT:-} ]] && storage+=(--runroot "$BUILDAH_RUNROOT")
bah() { buildah "${storage[@]}" "$@"; }

# 1. The root file system, cached by what makes it.
packages=$(scripts/deps.sh --print-run-packages | paste -sd, -)
key=$({ printf '%s\n' "$packages" "$mirror"; sed -n '/^# 1\./,/^# 2\./p' "$0"; } | sha256sum | cut -c1-16)
rootfs=$cache/rootfs-$key.tar
if [[ ! -s $rootfs ]]; then
	say "building the root file system with mmdebstrap (first time: a few minutes)"
	mkdir -p "$cache"
	export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1704067200}
	mmdebstrap --mode=root --variant=minbase --format=tar --quiet \
		--include="$packages" \
		--aptopt='APT::Install-Recommends "false"' \
		--aptopt='Acquire::Retries "3"' \
		--dpkgopt=force-unsafe-io \
		--dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/info/*' \
		--dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-include=/usr/share/doc/*/copyright' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		--dpkgopt='path-include=/usr/share/locale/locale.alias' \
		--customize-hook='mkdir -p "$1/var/lib/sandboxd" "$1/run/sandboxd"' \
		--customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/* "$1"/tmp/*' \
		--customize-hook='rm -f "$1/etc/machine-id" && touch "$1/etc/machine-id"' \
		bookworm "$rootfs.tmp" "$mirror"
	mv "$rootfs.tmp" "$rootfs"
fi
# 2. The image: that root, the binaries, the entry point.

# The root alone is an image of its own in buildah's storage, made once per
# root file system: adding the 1.4 GB tar and committing it takes minutes
# (two passes over its files), so that an image on top of it is one small
# layer, the binaries, and a rebuild after a code change takes seconds.
base=sandboxd-base:$key
if ! bah inspect --type image "$base" >/dev/null 2>&1; then
	say "making the base image $base from the root file system (once per root: minutes)"
	ctr=$(bah from --quiet scratch)
	trap 'bah rm "$ctr" >/dev/null 2>&1 || true' EXIT
	bah add --quiet "$ctr" "$rootfs" /
	bah commit --quiet --rm "$ctr" "$base" >/dev/null
	trap - EXIT
fi
ctr=$(bah from --quiet "$base")
trap 'bah rm "$ctr" >/dev/null 2>&1 || true' EXIT
bins=("$bin/sandboxd" "$bin/sandbox" "$bin/sandbox-agent" "$bin/sandbox-spawn" "$bin/sandbox-transpile")
[[ -x $bin/runsc ]] && bins+=("$bin/runsc")
bah copy --quiet "$ctr" "${bins[@]}" /usr/local/bin/
version=$("$bin/sandboxd" --version 2>/dev/null | awk '{print $NF}' || true)
bah config \
	--entrypoint '["/usr/local/bin/sandboxd"]' --cmd '' \
	--env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	--port 7070 --workingdir / \
	--label org.opencontainers.image.title=sandboxd \
	--label "org.opencontainers.image.version=${version:-dev}" \
	--label org.opencontainers.image.source=https://github.com/sandboxd/sandboxd \
	"$ctr"
bah commit --quiet --rm "$ctr" "$image" >/dev/null
trap - EXIT
if [[ -n ${VERSION:-} ]]; then
	bah tag "$image" "sandboxd:$VERSION"
fi
if [[ -n ${ARCHIVE:-} ]]; then
	bah push --quiet "$image" "oci-archive:$ARCHIVE:$image"
	say "wrote $ARCHIVE"
fi
say "built $image ($(bah images --format '{{.Size}}' "$image" | head -n1)); run it with: buildah from $image, or import it into a node's runtime"
