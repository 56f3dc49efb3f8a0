#!/usr/bin/env bash
# The recipe of sandboxd's `base` image: Debian 12 (bookworm) with Python
# (numpy, pandas, matplotlib, IPython), Node.js and npm, git, curl, wget, jq,
# gcc/make, vim, nano, procps, zip/unzip and CA certificates, built with
# mmdebstrap from Debian packages and slimmed: no documentation, man pages,
# info pages or locales beyond C.UTF-8, no apt lists or caches, and no Boost
# headers (python3-matplotlib pulls python3-scipy, which pulls pythran and
# libboost-dev; the headers are 160 MB that only pythran's compiler reads).
# dpkg still records every package as installed, so apt keeps working.
#
# Usage: build.sh OUT.tar
# Environment:
#   MIRROR             Debian mirror (default http://deb.debian.org/debian)
#   SOURCE_DATE_EPOCH  timestamps of generated files, for reproducible output
#                      (default: a fixed date)
# It writes a root file system tarball to OUT.tar; `sandboxd` imports it as
# a one-layer image. Run as root (mmdebstrap's root mode).
set -euo pipefail
out=${1:?usage: build.sh OUT.tar}
here=$(cd "$(dirname "$0")" && pwd)
mirror=${MIRROR:-http://deb.debian.org/debian}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1704067200}
packages=$(grep -v '^[[:space:]]*\(#\|$\)' "$here/packages.txt" | paste -sd, -)

# dpkg never unpacks what the path-exclude lines name, so docs and man pages
# cost neither download-and-unpack time nor space. Copyright files stay
# (path-include): they are the licences.
mmdebstrap \
	--mode=root \
	--variant=minbase \
	--format=tar \
	--include="$packages" \
	--aptopt='APT::Install-Recommends "false"' \
	--aptopt='Acquire::Retries "3"' \
	--dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/info/*' \
	--dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-include=/usr/share/doc/*/copyright' \
	--dpkgopt='path-exclude=/usr/share/locale/*' \
	--dpkgopt='path-include=/usr/share/locale/locale.alias' \
	--dpkgopt='path-exclude=/usr/share/lintian/*' \
	--dpkgopt='path-exclude=/usr/share/linda/*' \
	--dpkgopt='path-exclude=/usr/share/help/*' \
	--dpkgopt='path-exclude=/usr/share/gtk-doc/*' \
	--dpkgopt='path-exclude=/usr/share/vim/vim*/doc/*' \
	--dpkgopt='path-exclude=/usr/include/boost/*' \
	--customize-hook='mkdir -p "$1/workspace"' \
	--customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/cache/debconf/*-old "$1"/var/log/* "$1"/tmp/* "$1"/root/.cache' \
	--customize-hook='find "$1/usr/lib" -name "*.a" -path "*/python3*" -delete' \
	--customize-hook='rm -f "$1/etc/machine-id" "$1/var/lib/dbus/machine-id" && touch "$1/etc/machine-id"' \
	bookworm "$out" "$mirror"
