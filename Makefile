# sandboxd — see README.md. Everything builds with CGO_ENABLED=0: the agent
# must be static to run in any image, and nothing else needs cgo.

GO        ?= go
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
BIN       := bin
STATE_DIR ?= /var/lib/sandboxd
export CGO_ENABLED := 0

.PHONY: all build run test test-short bench fmt vet check clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/sandboxd ./cmd/sandboxd
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/sandbox ./cmd/sandbox
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/sandbox-agent ./cmd/sandbox-agent

# Starts sandboxd on its embedded defaults (needs root).
run: build
	$(BIN)/sandboxd --state-dir $(STATE_DIR)

# The whole suite, real sandboxes included (they need root; without root
# those tests skip and say so).
test: build check
	SANDBOXD_BIN_DIR=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 45m ./...

test-short: build
	SANDBOXD_BIN_DIR=$(CURDIR)/$(BIN) $(GO) test -count=1 -short ./...

check: fmt vet

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# Benchmarks; results with the machine they ran on go to bench/results/.
bench: build
	bench/run.sh

clean:
	rm -rf $(BIN)
