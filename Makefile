# spomig — build, test, package, and the local stack.
SHELL := /bin/bash
GO    ?= go
DIST  ?= dist
APP_FILES := host.json ProvisionHttp/function.json EncryptBlobTrigger/function.json SubmitQueueTrigger/function.json MonitorTimer/function.json

.PHONY: all build test test-short deps package demo dev fuzz bench clean tools

all: build

## deps: install what the tests and the local stack need (Azurite from npm, Go modules).
deps: node_modules/.bin/azurite
	$(GO) mod download

node_modules/.bin/azurite: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

## build: the static linux/amd64 handler the Functions host starts (host.json defaultExecutablePath).
build:
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags "-s -w" -o handler .

## tools: the local-stack programs (local Functions host, emulators, demo driver).
tools:
	mkdir -p bin
	$(GO) build -o bin/ ./cmd/...

## test: every test, against Azurite and the emulators (installs what it needs first), then each fuzz
## target of the product's parsers of outside input for a short time.
test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 25m ./...
	$(MAKE) --no-print-directory fuzz FUZZTIME=2s FUZZPKGS="$$($(GO) list ./... | grep -v -e /internal/dev/ -e /cmd/ | tr '\n' ' ')"

## fuzz: run each fuzz target of FUZZPKGS (default: every package) for FUZZTIME (default 10s).
FUZZTIME ?= 10s
FUZZPKGS ?= $$($(GO) list ./...)
fuzz:
	@set -e; for pkg in $(FUZZPKGS); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

## bench: the benchmarks, reported as ratios measured in one run.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 3x ./...

## package: a zip ready for zip deploy (handler keeps its executable bit; .funcignore honoured).
package: build
	rm -rf $(DIST) && mkdir -p $(DIST)/app
	$(GO) run ./cmd/funcpack -app . -out $(DIST)/spomig.zip
	@echo "wrote $(DIST)/spomig.zip"

## demo: the main job end to end on the local stack.
demo: deps build
	$(GO) run ./cmd/devstack demo

## dev: start the local stack and leave it running.
dev: deps build
	$(GO) run ./cmd/devstack dev

clean:
	rm -rf handler bin $(DIST) .devstack
