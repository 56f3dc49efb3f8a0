# sandboxd — see README.md. Everything builds with CGO_ENABLED=0: the agent
# must be static to run in any image, and nothing else needs cgo.

GO        ?= go
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
# The agent's segments start on 2 MiB boundaries, so that its copy on the
# daemon's huge-page tmpfs (rootfs.ShareAgent) is mapped 2 MiB at a time at
# every sandbox's start instead of faulted in 4 KiB pages.
AGENT_LDFLAGS := $(LDFLAGS) -R 0x200000
BIN       := bin
STATE_DIR ?= /var/lib/sandboxd
export CGO_ENABLED := 0

# Tools built from Go modules by scripts/deps.sh (runsc, test servers) come
# first on PATH, so the daemon and the tests find them.
TOOLS_BIN := $(shell scripts/deps.sh --print-bin)
export PATH := $(TOOLS_BIN):/usr/local/go/bin:$(PATH)

.PHONY: all build runsc deps deps-run run test test-short bench fmt vet staticcheck check clean console console-check cluster-up cluster-down image

all: build

build: console runsc
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/sandboxd ./cmd/sandboxd
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/sandbox ./cmd/sandbox
	$(GO) build -trimpath -ldflags '$(AGENT_LDFLAGS)' -o $(BIN)/sandbox-agent ./cmd/sandbox-agent
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/sandbox-spawn ./cmd/sandbox-spawn
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/sandbox-transpile ./cmd/sandbox-transpile

# gVisor's runsc, for sandboxes with the gvisor runtime: scripts/deps.sh
# builds it from its Go module at the version pinned there into a cache
# keyed by that version (minutes the first time, nothing after), and it is
# copied next to sandboxd, where the daemon looks for it.
runsc:
	@SANDBOXD_SKIP_PACKAGES=1 scripts/deps.sh run
	@mkdir -p $(BIN) && install -m 0755 $(TOOLS_BIN)/runsc $(BIN)/runsc

# Installs the binaries (the agent beside sandboxd, where it looks for it),
# the systemd unit, the docs, and /etc/sandboxd/config.yaml unless one is
# there already; runsc too when scripts/deps.sh built it. DESTDIR and PREFIX
# as usual. Then: systemctl enable --now sandboxd.
PREFIX  ?= /usr/local
DESTDIR ?=
install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/etc/sandboxd $(DESTDIR)/etc/systemd/system $(DESTDIR)$(PREFIX)/share/doc/sandboxd
	install -m 0755 $(BIN)/sandboxd $(BIN)/sandbox $(BIN)/sandbox-agent $(BIN)/sandbox-spawn $(BIN)/sandbox-transpile $(DESTDIR)$(PREFIX)/bin/
	if [ -x "$(TOOLS_BIN)/runsc" ]; then install -m 0755 "$(TOOLS_BIN)/runsc" $(DESTDIR)$(PREFIX)/bin/; fi
	sed 's|/usr/local/|$(PREFIX)/|g' deploy/systemd/sandboxd.service > $(DESTDIR)/etc/systemd/system/sandboxd.service
	install -m 0644 docs/operations.md docs/getting-started.md $(DESTDIR)$(PREFIX)/share/doc/sandboxd/
	[ -e $(DESTDIR)/etc/sandboxd/config.yaml ] || install -m 0644 deploy/config.yaml $(DESTDIR)/etc/sandboxd/config.yaml
	@if [ -z "$(DESTDIR)" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "installed; start it with: systemctl enable --now sandboxd (settings: /etc/sandboxd/config.yaml)"

# Installs what is missing (Debian packages, Go-built tools, npm packages):
# silent and under a second when everything is there. deps-run is the part
# `make run` needs; deps adds what the tests need.
deps:
	@scripts/deps.sh test

deps-run:
	@scripts/deps.sh run

# Starts sandboxd on its embedded defaults (needs root), after installing
# what is missing and building.
run: deps-run
	@$(MAKE) --no-print-directory build
	$(BIN)/sandboxd --state-dir $(STATE_DIR)

# A cluster on this machine (docs/cluster.md): etcd, kube-apiserver, three
# sandboxd nodes and a gateway, owned by a supervisor in the background.
# cluster-up prints SANDBOX_URL=... and SANDBOX_TOKEN=... (also in
# $(CLUSTER_DIR)/env); cluster-down removes everything it made.
CLUSTER_DIR ?= /tmp/sandboxd-cluster
cluster-up: deps
	@$(MAKE) --no-print-directory build
	@$(GO) build -trimpath -o $(BIN)/sandbox-cluster ./scripts/cluster
	@$(BIN)/sandbox-cluster up --dir $(CLUSTER_DIR) --bin $(BIN)

cluster-down:
	@$(GO) build -trimpath -o $(BIN)/sandbox-cluster ./scripts/cluster
	@$(BIN)/sandbox-cluster down --dir $(CLUSTER_DIR)

# sandboxd's container image, which deploy/kubernetes runs (docs/cluster.md):
# buildah, on a Debian 12 root file system made by mmdebstrap and cached.
# It installs nothing: without buildah or mmdebstrap it says so. IMAGE names
# it (also tagged sandboxd:$(VERSION)); ARCHIVE=FILE writes an OCI archive too.
IMAGE ?= sandboxd:dev
image: build
	@IMAGE=$(IMAGE) VERSION=$(VERSION) scripts/image.sh $(BIN)

# The whole suite, real sandboxes included (they need root; without root
# those tests skip and say so).
test: deps
	@$(MAKE) --no-print-directory build check
	SANDBOXD_BIN_DIR=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 45m ./...

test-short: build
	SANDBOXD_BIN_DIR=$(CURDIR)/$(BIN) $(GO) test -count=1 -short ./...

check: fmt vet staticcheck console-check

# The web console (internal/console): npm packages pinned by
# package-lock.json, bundled by esbuild into internal/console/dist, which
# is committed so that `go build` works without npm. `make build` rebuilds
# it; console-check fails if that changed anything.
CONSOLE_WEB := internal/console/web
console: $(CONSOLE_WEB)/node_modules/.installed
	cd $(CONSOLE_WEB) && node build.mjs

$(CONSOLE_WEB)/node_modules/.installed: $(CONSOLE_WEB)/package-lock.json
	cd $(CONSOLE_WEB) && npm ci --no-audit --no-fund
	cksum < $(CONSOLE_WEB)/package-lock.json > $@

console-check: console
	@if git rev-parse --git-dir >/dev/null 2>&1 && ! git diff --quiet -- internal/console/dist; then \
		echo "internal/console/dist differs from what make console builds; commit the rebuilt files:"; \
		git diff --stat -- internal/console/dist; exit 1; fi

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# staticcheck, built by scripts/deps.sh from its Go module at the version
# pinned there (nothing to do once it is built; the first build takes a
# few minutes). Its checks are the default set.
staticcheck:
	@SANDBOXD_SKIP_PACKAGES=1 scripts/deps.sh test
	staticcheck ./...

# Benchmarks; results with the machine they ran on go to bench/results/.
bench: build
	bench/run.sh

clean:
	rm -rf $(BIN)
