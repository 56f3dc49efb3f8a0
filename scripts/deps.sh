#!/usr/bin/env bash
# scripts/deps.sh — the one place that installs what sandboxd needs.
#
#   scripts/deps.sh [run|test] [--check]
#
#   run     what `make run` needs: runtimes, networking, image tools, the
#           packages the host image offers to sandboxes, the console's npm
#           packages
#   test    (default) all of that plus what the test suite needs (Chromium
#           for the console tests, the image tests' busybox and musl, the
#           test servers built from Go modules)
#   --check install nothing: list what is missing and exit 1 if anything is
#   --print-run-packages  print RUN_PACKAGES, one a line (scripts/image.sh
#           installs them in sandboxd's container image)
#
# Idempotent and quiet: when everything is present it prints nothing and
# takes well under a second (one dpkg-query, a few stat calls). It prints
# progress only while it installs. Three kinds of dependency, each with its
# own section below:
#
#   1. Debian packages, by apt (Debian 12 and 13, Ubuntu 22.04 and 24.04;
#      needs root). Add a package to RUN_PACKAGES or TEST_PACKAGES.
#   2. Tools Debian lacks, built from their Go module at a pinned version into
#      a cache keyed by version (build_go_tool NAME MODULE@VERSION). Add one
#      line to go_tools.
#   3. npm packages, by lock file (npm ci when the lock file changed).
#
# Environment: SANDBOXD_TOOLS_DIR overrides the Go tools' cache
# (default /var/cache/sandboxd/tools as root, ~/.cache/sandboxd/tools
# otherwise); the built tools are linked into $SANDBOXD_TOOLS_DIR/bin, which
# the Makefile puts first on PATH (`scripts/deps.sh --print-bin` prints it).
set -euo pipefail

cd "$(dirname "$0")/.."
SANDBOXD_ROOT=$PWD

# ---------------------------------------------------------------------------
# 1. Debian packages
# ---------------------------------------------------------------------------

# What the daemon and `make run` need. The host image's /usr is the host's, so
# what sandboxes find there (python3 with IPython, matplotlib, pandas and numpy
# for the code interpreter, node, git, tmux, vim, ps) is installed here too.
RUN_PACKAGES=(
	# OCI runtimes, networking, disk quotas, process tools
	crun runc nftables iproute2 procps psmisc kmod e2fsprogs mount util-linux
	# sandboxes' own /proc/meminfo, cpuinfo, stat and uptime (internal/lxcfs)
	lxcfs
	git ca-certificates curl make
	# the host image: code interpreter and tools sandboxes find on /usr
	python3
	python3-ipython python3-matplotlib python3-pandas python3-numpy
	tmux vim-tiny
	# images: Dockerfile builds (buildah) and the base image recipe (mmdebstrap)
	buildah mmdebstrap
	# bucket mounts (docs/storage.md): the FUSE client the daemon mounts
	# S3-compatible buckets with, and fusermount3 to detach them
	s3fs fuse3
	# backups of a directory (docs/snapshots.md): tar2sqfs packs the agent's
	# tar stream into a squashfs image (the kernel mounts it)
	squashfs-tools-ng
)

# What only the test suite needs.
TEST_PACKAGES=(
	# the console's browser tests
	chromium fonts-dejavu-core
	# what the image tests assemble their busybox and musl images from
	busybox-static musl-tools
	# the Python SDK's tests (e2e TestSDKPython)
	python3-pytest
	# unsquashfs lists backup images in internal/backup's tests
	squashfs-tools
	# BenchmarkShellFloor/syscount counts the session shell's system calls
	strace
)

# ---------------------------------------------------------------------------
# 2. Tools Debian lacks, built from Go modules at pinned versions
# ---------------------------------------------------------------------------

# go_tools PROFILE lists the tools for a profile, one build_go_tool line each:
#
#   build_go_tool runsc gvisor.dev/gvisor/runsc@v0.0.0-20250101000000-abcdef123456
#
# NAME is the binary's name on PATH; MODULE@VERSION is what `go install`
# takes, pinned (never @latest, so a cache entry never goes stale).
go_tools() {
	local profile=$1
	# gVisor's runsc (Apache-2.0): the gvisor runtime. Debian has no package.
	# Built from gVisor's module with the Sentry's seccomp programs compiled
	# ahead, as gVisor's own (Bazel) releases are (runsc_precompile_seccomp).
	build_go_tool_from_source runsc gvisor.dev/gvisor@v0.0.0-20260905035102-160fafc42237 \
		./runsc runsc_precompile_seccomp "" precompiled-seccomp
	: "$profile" # run-time tools go above this line, test-only ones in the if
	if [[ $profile == test ]]; then
		# versitygw (Apache-2.0): the S3-compatible server the bucket mount
		# and backup tests start on loopback with a POSIX backend
		# (internal/s3test).
		build_go_tool versitygw github.com/versity/versitygw/cmd/versitygw@v1.8.0
		# staticcheck (MIT): `make check`'s linter (dead code, ignored
		# results, deprecated APIs, allocation traps). Debian's package is
		# too old for this Go.
		build_go_tool staticcheck honnef.co/go/tools/cmd/staticcheck@v0.8.2
		# etcd (Apache-2.0) and kube-apiserver (Apache-2.0): the real
		# Kubernetes API the cluster tests and `make cluster-up` run on
		# loopback (internal/kubetest). Neither installs with `go install`
		# (their go.mod files replace modules with directories of their
		# repositories), so they are built from source with those replace
		# directives dropped. kube-apiserver takes minutes cold.
		build_go_tool_from_source etcd go.etcd.io/etcd/server/v3@v3.6.17 . :
		build_go_tool_from_source kube-apiserver k8s.io/kubernetes@v1.37.2 \
			./cmd/kube-apiserver kube_staging_fixup \
			"-X k8s.io/component-base/version.gitVersion=v1.37.2 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"
	fi
}

# kube_staging_fixup runs in k8s.io/kubernetes' source: its go.mod requires
# the k8s.io/* staging modules at v0.0.0 (replaced by ./staging, which the
# module zip lacks). They are published as v0.MINOR.PATCH of the release;
# the sample modules are examples nothing in the binaries imports.
kube_staging_fixup() {
	local version=$1 mod args=()
	local staging=v0.${version#v1.}
	while read -r mod; do
		case $mod in
		k8s.io/sample-*) args+=("-droprequire=$mod") ;;
		*) args+=("-require=$mod@$staging") ;;
		esac
	done < <(awk '
		/^require[ \t]*\($/ { blk = 1; next }
		blk && /^\)/ { blk = 0; next }
		/^require[ \t]/ { sub(/^require[ \t]+/, ""); one = 1 }
		(blk || one) && $2 == "v0.0.0" { print $1 }
		{ one = 0 }
	' go.mod)
	if [[ ${#args[@]} -gt 0 ]]; then
		go mod edit "${args[@]}"
	fi
}

# ---------------------------------------------------------------------------
# Machinery (nothing to edit below for a new dependency)
# ---------------------------------------------------------------------------

PROFILE=test
CHECK_ONLY=0
MISSING=() # what --check found missing, for its report

say() { printf 'deps: %s\n' "$*" >&2; }
die() {
	printf 'deps: %s\n' "$*" >&2
	exit 1
}

is_root() { [[ $(id -u) -eq 0 ]]; }

tools_dir() {
	if [[ -n ${SANDBOXD_TOOLS_DIR:-} ]]; then
		echo "$SANDBOXD_TOOLS_DIR"
	elif is_root; then
		echo /var/cache/sandboxd/tools
	else
		echo "${XDG_CACHE_HOME:-$HOME/.cache}/sandboxd/tools"
	fi
}

# distro_supported says whether apt-get can install the package lists as
# written: the releases whose package names were checked.
distro_supported() {
	[[ -r /etc/os-release ]] || return 1
	local ID="" VERSION_ID=""
	# shellcheck disable=SC1091
	. /etc/os-release
	case "$ID:$VERSION_ID" in
	debian:12 | debian:13 | ubuntu:22.04 | ubuntu:24.04) return 0 ;;
	esac
	return 1
}

os_name() {
	if [[ -r /etc/os-release ]]; then
		(
			# shellcheck disable=SC1091
			. /etc/os-release
			echo "${PRETTY_NAME:-${ID:-unknown}}"
		)
	else
		uname -s
	fi
}

# missing_packages prints the packages of the arguments dpkg does not have
# installed, one per line, in a single dpkg-query call.
missing_packages() {
	local -A have=()
	local status pkg
	# A package whose triggers are still pending (another apt run is
	# finishing) is installed as far as its files go.
	while read -r status pkg; do
		[[ $status == installed || $status == triggers-* ]] && have[${pkg%%:*}]=1
	done < <(dpkg-query -W -f='${db:Status-Status} ${Package}\n' "$@" 2>/dev/null || true)
	for pkg in "$@"; do
		[[ -n ${have[$pkg]:-} ]] || echo "$pkg"
	done
}

wanted_packages() {
	printf '%s\n' "${RUN_PACKAGES[@]}"
	if [[ $PROFILE == test ]]; then
		printf '%s\n' "${TEST_PACKAGES[@]}"
	fi
	# Node.js may come from elsewhere (NodeSource ships its own npm and
	# conflicts with Debian's): only ask apt for node and npm when missing.
	command -v node >/dev/null || echo nodejs
	command -v npm >/dev/null || echo npm
}

install_packages() {
	local wanted missing
	mapfile -t wanted < <(wanted_packages)
	if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
		say "this system ($(os_name)) has no apt; sandboxd's dependency script installs"
		say "Debian packages on Debian 12/13 and Ubuntu 22.04/24.04. Install the equivalents of:"
		say "  ${wanted[*]}"
		say "then build with SANDBOXD_SKIP_PACKAGES=1 to skip this check."
		exit 1
	fi
	mapfile -t missing < <(missing_packages "${wanted[@]}")
	[[ ${#missing[@]} -eq 0 ]] && return 0
	if [[ $CHECK_ONLY -eq 1 ]]; then
		MISSING+=("Debian packages: ${missing[*]}")
		return 0
	fi
	if ! distro_supported; then
		say "$(os_name) is not one of the systems this script knows (Debian 12/13, Ubuntu 22.04/24.04)."
		say "Install these packages (or their equivalents), then run it again:"
		say "  ${missing[*]}"
		say "(SANDBOXD_SKIP_PACKAGES=1 skips this check.)"
		exit 1
	fi
	if ! is_root; then
		say "missing Debian packages: ${missing[*]}"
		die "installing them needs root: run 'sudo scripts/deps.sh $PROFILE' (or as root: apt-get install ${missing[*]})"
	fi
	say "installing ${#missing[@]} Debian packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# Wait for another apt run (a second checkout's make, unattended
	# upgrades) rather than fail on its lock.
	local lock=(-o DPkg::Lock::Timeout=600)
	apt-get "${lock[@]}" update -q >&2 || die "apt-get update failed"
	apt-get "${lock[@]}" install -y -q --no-install-recommends "${missing[@]}" >&2 ||
		die "apt-get install failed for: ${missing[*]}"
	mapfile -t missing < <(missing_packages "${wanted[@]}")
	[[ ${#missing[@]} -eq 0 ]] || die "still missing after apt-get install: ${missing[*]}"
}

# check_go makes sure the Go toolchain go.mod asks for can build: an older go
# (1.21 or later) fetches the right toolchain itself (GOTOOLCHAIN=auto).
check_go() {
	local want have
	want=$(awk '$1 == "go" { print $2; exit }' go.mod)
	if ! command -v go >/dev/null; then
		PATH="/usr/local/go/bin:$PATH"
		command -v go >/dev/null ||
			die "Go $want or later is needed to build sandboxd and is not installed: see https://go.dev/doc/install (it goes in /usr/local/go)"
	fi
	have=$(go env GOVERSION 2>/dev/null) || die "'go env GOVERSION' failed: is Go installed correctly?"
	have=${have#go}
	if ! version_ge "$have" "1.21"; then
		die "Go $have is too old to build sandboxd (go.mod asks for $want): see https://go.dev/doc/install"
	fi
}

# version_ge A B: whether dotted version A >= B.
version_ge() {
	[[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1) == "$2" ]]
}

# build_go_tool NAME MODULE@VERSION builds NAME once per version into
# $TOOLS/NAME/VERSION/ and points $TOOLS/bin/NAME at it. Cheap when present:
# one stat and one readlink.
build_go_tool() {
	local name=$1 modver=$2
	local version=${modver##*@}
	[[ $modver == *@* && -n $version && $version != latest ]] ||
		die "build_go_tool $name: pin a version (MODULE@VERSION), got '$modver'"
	tool_present "$name" "$modver" && return 0
	[[ $CHECK_ONLY -eq 1 ]] && return 0
	check_go
	local tools dir tmp
	tools=$(tools_dir)
	dir="$tools/$name/$version"
	say "building $name from $modver into $dir"
	mkdir -p "$tools"
	tmp=$(mktemp -d "$tools/.build-$name.XXXXXX")
	# CGO off: a static binary that does not depend on the host's libc.
	if ! CGO_ENABLED=0 GOBIN="$tmp" GOFLAGS=-trimpath go install "$modver" >&2; then
		rm -rf "$tmp"
		die "building $name from $modver failed"
	fi
	[[ -x $tmp/$name ]] || {
		rm -rf "$tmp"
		die "building $modver did not produce a binary named $name"
	}
	mkdir -p "$dir"
	mv "$tmp/$name" "$dir/$name"
	rm -rf "$tmp"
	mkdir -p "$tools/bin"
	ln -sfn "$dir/$name" "$tools/bin/$name"
}

# tool_present NAME MODULE@VERSION [KEY]: whether the built tool is in the
# cache under KEY (the version by default; linked into $TOOLS/bin, which it
# does when only the link is missing). Under --check it records what is
# missing instead.
tool_present() {
	local name=$1 modver=$2 key=${3:-${2##*@}} tools dir
	tools=$(tools_dir)
	dir="$tools/$name/$key"
	if [[ ! -x $dir/$name ]]; then
		[[ $CHECK_ONLY -eq 1 ]] && MISSING+=("Go tool $name ($modver)")
		return 1
	fi
	[[ $(readlink "$tools/bin/$name" 2>/dev/null) == "$dir/$name" ]] && return 0
	if [[ $CHECK_ONLY -eq 1 ]]; then
		MISSING+=("link $tools/bin/$name -> $dir/$name")
		return 0
	fi
	mkdir -p "$tools/bin"
	ln -sfn "$dir/$name" "$tools/bin/$name"
}

# local_replaces prints the modules the go.mod in the current directory
# replaces with a directory (=> ./x or ../x).
local_replaces() {
	awk '
		/^replace[ \t]*\($/ { blk = 1; next }
		blk && /^\)/ { blk = 0; next }
		/^replace[ \t]/ { sub(/^replace[ \t]+/, ""); one = 1 }
		blk || one { for (i = 1; i < NF; i++) if ($i == "=>" && $(i + 1) ~ /^\./) print $1 }
		{ one = 0 }
	' go.mod
}

# build_go_tool_from_source NAME MODULE@VERSION PACKAGE FIXUP [LDFLAGS [VARIANT]] builds
# PACKAGE (relative to the module's root) of a module that `go install`
# refuses because its go.mod replaces modules with directories of its own
# repository, which the module zip does not hold. It copies the module's
# source from the module cache, drops those replace directives (the modules
# are published at the versions go.mod requires), its go.work and vendor
# directory, runs FIXUP VERSION there (a function, or : for nothing), and
# builds with -mod=mod, checksums checked against the sum database as usual.
# Cached like build_go_tool: once per version (VERSION+VARIANT with a
# VARIANT, naming what FIXUP changes, so that a changed build never reuses
# the plain one's cache entry).
build_go_tool_from_source() {
	local name=$1 modver=$2 pkg=$3 fixup=$4 ldflags=${5:-} variant=${6:-}
	local version=${modver##*@}
	[[ $modver == *@* && -n $version && $version != latest ]] ||
		die "build_go_tool_from_source $name: pin a version (MODULE@VERSION), got '$modver'"
	local key=$version${variant:++$variant}
	tool_present "$name" "$modver" "$key" && return 0
	[[ $CHECK_ONLY -eq 1 ]] && return 0
	check_go
	local tools dir tmp start=$SECONDS
	tools=$(tools_dir)
	dir="$tools/$name/$key"
	say "building $name from $modver (source, local replaces dropped) into $dir"
	mkdir -p "$tools"
	tmp=$(mktemp -d "$tools/.build-$name.XXXXXX")
	if ! build_from_source_in "$tmp" "$name" "$modver" "$pkg" "$fixup" "$ldflags"; then
		chmod -R u+w "$tmp" 2>/dev/null || true
		rm -rf "$tmp"
		die "building $name from $modver failed"
	fi
	mkdir -p "$dir"
	mv "$tmp/$name" "$dir/$name"
	chmod -R u+w "$tmp" 2>/dev/null || true
	rm -rf "$tmp"
	say "built $name in $((SECONDS - start)) s"
	mkdir -p "$tools/bin"
	ln -sfn "$dir/$name" "$tools/bin/$name"
}

# build_from_source_in TMP NAME MODULE@VERSION PACKAGE FIXUP LDFLAGS: the
# steps of build_go_tool_from_source, leaving TMP/NAME (in a subshell, for
# the cd; each step checked, as errexit does not apply under `if`).
build_from_source_in() (
	local tmp=$1 name=$2 modver=$3 pkg=$4 fixup=$5 ldflags=$6 src mod
	src=$(GOFLAGS=-mod=mod go mod download -json "$modver" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') || return 1
	[[ -n $src && -d $src ]] || {
		say "go mod download $modver gave no source directory"
		return 1
	}
	cp -r "$src" "$tmp/src" && chmod -R u+w "$tmp/src" && cd "$tmp/src" || return 1
	rm -rf go.work go.work.sum vendor || return 1
	for mod in $(local_replaces); do
		go mod edit "-dropreplace=$mod" || return 1
	done
	"$fixup" "${modver##*@}" || return 1
	CGO_ENABLED=0 GOWORK=off GOFLAGS="-trimpath -mod=mod" \
		go build -ldflags "-s -w $ldflags" -o "$tmp/$name" "$pkg" >&2
)

# runsc_precompile_seccomp runs in gVisor's source: it compiles the Sentry's
# seccomp programs ahead into runsc/boot/filter/filter_precompiled.go (empty
# in the module: precompiling is a step of gVisor's Bazel build), with
# scripts/runsc-seccomp. runsc then loads its filter at each boot and
# restore instead of compiling it (same rules, same code; see
# docs/security.md). Its directory is this script's, one level up.
runsc_precompile_seccomp() {
	local gen=$SANDBOXD_ROOT/scripts/runsc-seccomp
	cp "$gen/precompile.go" runsc/boot/filter/config/sandboxd_precompile.go &&
		mkdir -p sandboxd-precompile && cp "$gen/main.go" sandboxd-precompile/main.go &&
		CGO_ENABLED=0 GOWORK=off GOFLAGS="-trimpath -mod=mod" \
			go run -tags sandboxd_precompile ./sandboxd-precompile runsc/boot/filter/filter_precompiled.go >&2
}

# install_npm runs npm ci in each directory with a package-lock.json whose
# content differs from what was last installed there (a hash in
# node_modules/.installed, so a fresh clone's timestamps do not matter).
install_npm() {
	local dir dirs=(internal/console/web)
	# The TypeScript SDK's compiler and its example, for their tests (e2e
	# TestSDKTypeScript).
	if [[ $PROFILE == test ]]; then
		dirs+=(sdk/typescript examples/ai-code-executor-ts)
		# The MCP server's end-to-end test drives it with the official
		# TypeScript MCP client (e2e TestMCP).
		dirs+=(e2e/testdata/mcpclient)
		# The E2B layer's end-to-end test drives it with the official,
		# unchanged E2B SDK (e2e TestE2B).
		dirs+=(e2e/testdata/e2bclient)
	fi
	for dir in "${dirs[@]}"; do
		local lock="$dir/package-lock.json" stamp="$dir/node_modules/.installed"
		local sum
		sum=$(cksum <"$lock")
		[[ -f $stamp && $(<"$stamp") == "$sum" ]] && continue
		if [[ $CHECK_ONLY -eq 1 ]]; then
			MISSING+=("npm packages in $dir")
			continue
		fi
		command -v npm >/dev/null || die "npm is needed for $dir and is not installed"
		say "installing npm packages in $dir (npm ci)"
		(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2) || die "npm ci failed in $dir"
		printf '%s\n' "$sum" >"$stamp"
	done
}

main() {
	local arg
	for arg in "$@"; do
		case $arg in
		run | test) PROFILE=$arg ;;
		--check) CHECK_ONLY=1 ;;
		--print-bin)
			echo "$(tools_dir)/bin"
			return 0
			;;
		--print-run-packages)
			printf '%s\n' "${RUN_PACKAGES[@]}"
			return 0
			;;
		-h | --help)
			sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
			return 0
			;;
		*) die "unknown argument '$arg' (usage: scripts/deps.sh [run|test] [--check] [--print-bin] [--print-run-packages])" ;;
		esac
	done
	if [[ -z ${SANDBOXD_SKIP_PACKAGES:-} ]]; then
		install_packages
	fi
	check_go
	go_tools "$PROFILE"
	install_npm
	if [[ $CHECK_ONLY -eq 1 && ${#MISSING[@]} -gt 0 ]]; then
		say "missing for '$PROFILE':"
		printf '  %s\n' "${MISSING[@]}" >&2
		return 1
	fi
}

main "$@"
