# warmpool: the entry points people type. Everything a target needs it builds itself, into ./bin.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c

GO      ?= go
BIN     := $(CURDIR)/bin
PKGS    := ./...
# Unit + integration + e2e; the e2e tier brings up a local cluster with real Karpenter and runs
# about 25 minutes on 2 cores (ten save/restore cycles among it), more on a loaded machine.
TEST_TIMEOUT ?= 60m
FUZZTIME     ?= 30s
BENCHTIME    ?= 1s

export KUBEBUILDER_ASSETS := $(BIN)

.PHONY: all build tools test test-unit test-e2e fuzz bench run demo fmt vet clean help manifests image-binary helm-lint

# The release version stamped into the image binary (warmpool --version).
VERSION      ?= dev
IMAGE_ARCHES ?= amd64 arm64
# Static (no cgo), reproducible (-trimpath) and stripped (-s -w): what the distroless image runs.
IMAGE_LDFLAGS := -s -w -X main.version=$(VERSION)
CHART        := deploy/helm/warmpool

all: build

help: ## List the targets.
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## Build bin/warmpool.
	$(GO) build -o $(BIN)/warmpool ./cmd/warmpool

tools: ## Build etcd, kube-apiserver, kube-scheduler, kube-controller-manager, kwok, Karpenter (KWOK) and controller-gen into bin/ from pinned Go modules.
	./hack/build-tools.sh
	./hack/install-prometheus.sh

test: tools vet ## Run every test tier: unit, integration (real apiserver) and e2e (real Karpenter).
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)

# The packages whose tests start no API server (no envtest, no e2e/cluster) and need nothing in
# bin/. The others (controller/operator, controller/enginecache, controller/pools, controller/scaling,
# controller/queue/arcsuite, cmd/warmpool, deploy/helm, e2e) run under `make test`.
UNIT_PKGS := ./controller/config/... ./controller/counted/... ./controller/nodewatch/... ./controller/queue \
	./controller/enginecache/steps/... ./controller/operator/operatortest/... \
	./controller/scaling/policy/... ./controller/scaling/simulate/... ./hack/tracegen/... ./nodepools/... ./volumes/...

test-unit: ## Only the tests that need no control plane (nothing built first).
	$(GO) test -count=1 $(UNIT_PKGS)

test-e2e: tools ## Only the end-to-end tier.
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -v ./e2e/...

# issue #11's chaos run at length: the real `warmpool controller` SIGKILLed CHAOS_KILLS times at
# random moments through restore, consolidation and save, then every check of an uninterrupted
# run (e2e/chaos_test.go; docs/testing.md). `make test` runs it short (4 kills).
# WARMPOOL_CHAOS_SEED=<seed from a run's log> repeats a run's choices.
CHAOS_KILLS ?= 24
.PHONY: chaos
chaos: tools ## The chaos test at length: the real controller killed CHAOS_KILLS (24) times through save and restore.
	WARMPOOL_CHAOS_KILLS=$(CHAOS_KILLS) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) -v -run '^TestChaos' ./e2e

# Every `func FuzzX` in a _test.go file, as <package dir>:<target>; go test fuzzes one target
# of one package at a time.
FUZZ_TARGETS = $(shell grep -rEo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]+' . | sed -E 's|^(.*)/[^/]+_test\.go:func (Fuzz.*)$$|\1:\2|' | sort -u)

fuzz: ## Run every fuzz target for FUZZTIME each (no control plane needed).
	@test -n "$(FUZZ_TARGETS)" || { echo "no fuzz targets found"; exit 1; }
	@for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t%%:*} $${t##*:}"; \
		$(GO) test "$${t%%:*}" -run '^$$' -fuzz "^$${t##*:}$$" -fuzztime $(FUZZTIME) || exit 1; \
	done

# PKGS includes ./e2e, whose BenchmarkControllerFootprint runs the real controller on the local
# cluster (built by `make tools`) against 1000 kwok nodes for several minutes, past go test's
# default 10m timeout. It runs once at any BENCHTIME: one run takes longer than a second.
bench: tools ## Run the benchmarks and print them as a table.
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -timeout $(TEST_TIMEOUT) $(PKGS) | ./hack/benchtable.sh
	$(GO) run ./cmd/warmpool simulate --trace deploy/traces/weekday.csv --trace deploy/traces/spiky.csv --trace deploy/traces/fanout.csv

run: build ## Run the controller against KUBECONFIG (flags: ARGS="--node-class kwok").
	$(BIN)/warmpool controller --kubeconfig "$${KUBECONFIG:?set KUBECONFIG}" --leader-elect=false $(ARGS)

demo: tools build ## Bring up a local cluster with real Karpenter and show warmpool at work (HOLD=1 keeps it up).
	$(GO) run ./e2e/demo $(if $(HOLD),-hold)

fmt: ## gofmt every file.
	gofmt -w $$(git ls-files '*.go')

vet: ## go vet, and fail on files gofmt would change.
	$(GO) vet $(PKGS)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [[ -n "$$unformatted" ]]; then echo "not gofmt-ed: $$unformatted"; exit 1; fi

manifests: tools ## Regenerate the chart's RBAC rules from the kubebuilder markers in controller/ (controller-gen).
	$(BIN)/controller-gen rbac:roleName=warmpool paths=./controller/operator output:rbac:dir=$(CHART)/files/rbac

image-binary: ## Build the static, stripped linux/amd64 and linux/arm64 binaries the Dockerfile copies (bin/linux/<arch>/warmpool).
	for arch in $(IMAGE_ARCHES); do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags '$(IMAGE_LDFLAGS)' -o $(BIN)/linux/$$arch/warmpool ./cmd/warmpool; \
	done

helm-lint: tools ## Lint and render the chart with the Helm SDK, check its schema and RBAC, dry-run it on a real apiserver.
	$(GO) test -count=1 ./deploy/...

clean: ## Remove bin/.
	rm -rf $(BIN)
