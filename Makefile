# warmpool: the entry points people type. Everything a target needs it builds itself, into ./bin.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c

GO      ?= go
BIN     := $(CURDIR)/bin
PKGS    := ./...
# Unit + integration + e2e; the e2e tier brings up a local cluster with real Karpenter.
TEST_TIMEOUT ?= 40m
FUZZTIME     ?= 30s
BENCHTIME    ?= 1s

export KUBEBUILDER_ASSETS := $(BIN)

.PHONY: all build tools test test-unit test-e2e fuzz bench run demo fmt vet clean help

all: build

help: ## List the targets.
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## Build bin/warmpool.
	$(GO) build -o $(BIN)/warmpool ./cmd/warmpool

tools: ## Build etcd, kube-apiserver, kube-scheduler, kube-controller-manager, kwok and Karpenter (KWOK) into bin/ from pinned Go modules.
	./hack/build-tools.sh
	./hack/install-prometheus.sh

test: tools vet ## Run every test tier: unit, integration (real apiserver) and e2e (real Karpenter).
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)

test-unit: ## Only the tests that need no control plane.
	$(GO) test -count=1 ./controller/config/... ./controller/scaling/... ./nodepools/... ./volumes/...

test-e2e: tools ## Only the end-to-end tier.
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -v ./e2e/...

fuzz: ## Run each fuzz target for FUZZTIME.
	$(GO) test ./controller/config -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME)

bench: tools ## Run the benchmarks and print them as a table.
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) $(PKGS) | ./hack/benchtable.sh
	$(GO) run ./cmd/warmpool simulate --trace deploy/traces/weekday.csv --trace deploy/traces/spiky.csv

run: build ## Run the controller against KUBECONFIG (flags: ARGS="--node-class kwok").
	$(BIN)/warmpool controller --kubeconfig "$${KUBECONFIG:?set KUBECONFIG}" --leader-elect=false $(ARGS)

demo: tools build ## Bring up a local cluster with real Karpenter and show warmpool at work (HOLD=1 keeps it up).
	$(GO) run ./e2e/demo $(if $(HOLD),-hold)

fmt: ## gofmt every file.
	gofmt -w $$(git ls-files '*.go')

vet: ## go vet, and fail on files gofmt would change.
	$(GO) vet $(PKGS)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [[ -n "$$unformatted" ]]; then echo "not gofmt-ed: $$unformatted"; exit 1; fi

clean: ## Remove bin/.
	rm -rf $(BIN)
