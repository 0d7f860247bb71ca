# prepull: see README.md. `make help` lists the targets.
SHELL := /usr/bin/env bash
GO ?= go
# The product builds from the committed vendor/ directory. Everything here
# builds static and -trimpath, as the images are, so tests, the binaries the
# tests start and the images share one build cache: a cold make test
# compiles the dependency tree once per architecture, not three times.
export GOFLAGS := -mod=vendor -trimpath
export CGO_ENABLED := 0
BIN_DIR ?= bin

.PHONY: servers verify-static chaos bench-quick bench-micro help demo demo-stop build dist images cluster-e2e fuzz alert-rules test test-unit test-integration e2e verify verify-fresh generate controlplane containerd bench clean

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

demo: controlplane containerd ## Run prepull locally (control plane, registry, 3 nodes, both binaries) and follow an example job.
	@echo "building the demo and prepull (first time: a minute or two)" >&2
	@$(GO) build -o $(BIN_DIR)/demo ./hack/demo
	@$(BIN_DIR)/demo

demo-stop: ## Stop a demo running in another terminal.
	@hack/demo-stop.sh

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
build: ## Build every package (and binaries under cmd/ into bin/, stamped with VERSION and REVISION).
	$(GO) build ./...
	$(GO) build -ldflags "-X github.com/prepull/prepull/pkg/version.Version=$(VERSION) -X github.com/prepull/prepull/pkg/version.Revision=$(REVISION)" -o $(BIN_DIR)/ ./cmd/...

test: verify-static verify-fresh test-unit fuzz servers test-integration alert-rules e2e cluster-e2e chaos bench-quick ## The full check CI runs: verify, a fresh-cache check, unit, integration and end-to-end tests.

test-unit: ## Unit tests (no servers) with the race detector, and each micro-benchmark of pkg/ once (so none rots).
	set -o pipefail; CGO_ENABLED=1 $(GO) test -race -count=1 -bench . -benchtime 1x ./pkg/... $(if $(wildcard cmd),./cmd/...) 2>&1 | { grep -v '^Benchmark\|^goos\|^goarch\|^pkg:\|^cpu:\|^PASS$$' || true; }

test-integration: controlplane containerd ## Tests against a real etcd, kube-apiserver and containerd.
	$(GO) test -count=1 -timeout 30m ./test/integration/...

e2e: controlplane containerd ## End to end: controller and three daemons (built with the race detector) on real containerd, a real registry and apiserver.
	PREPULL_RACE_BINARIES=1 $(GO) test -count=1 -timeout 20m ./test/e2e/...

SOAK ?=
chaos: controlplane containerd ## The fault suite: apiserver, containerd, daemon and leader failures, full disks, nodes leaving and joining, bursts, bad NodeImages, load, and a 60 s soak of rotating faults (SOAK=1: 10 minutes).
	@hack/build-controlplane.sh node >/dev/null
	$(GO) test -count=1 -timeout 45m ./test/chaos/... $(if $(SOAK),-args -chaos.soak-duration=10m)

REGISTRY ?=
images: ## Container images for both binaries (linux/amd64+arm64, no Docker needed): to bin/images (OCI layout), or pushed with REGISTRY=host/path.
	$(GO) run ./hack/images $(if $(REGISTRY),-registry=$(REGISTRY)) $(if $(TAG),-tag=$(TAG)) $(if $(PLATFORMS),-platforms=$(PLATFORMS))

cluster-e2e: controlplane containerd ## Install prepull with kubectl apply -k on a real 2-node cluster (kubelets, containerd) on this machine and check it end to end.
	@hack/build-controlplane.sh node >/dev/null
	@hack/install-containerd.sh node
	$(GO) test -count=1 -timeout 25m ./test/clustere2e/...

alert-rules: ## Check the monitoring overlay's alerting rules with promtool and run their unit tests.
	@hack/install-containerd.sh promtool
	$(GO) test -count=1 ./test/monitoring/...

dist: ## kubectl-prepull archives for krew (linux/darwin, amd64/arm64) and the rendered krew manifest, in bin/dist.
	@hack/dist.sh

controlplane: ## Build (or find cached) etcd, kube-apiserver and kubectl.
	@hack/build-controlplane.sh >/dev/null

containerd: ## Install Debian's containerd 1.6 if missing and build (or find cached) containerd 2.x; the tests run their own instances.
	@hack/install-containerd.sh
	@hack/build-containerd.sh >/dev/null

servers: ## Everything the tests run, built (or found cached) side by side: control plane and node binaries, containerd 2.x, Debian's packages.
	@hack/install-containerd.sh node
	@hack/install-containerd.sh promtool
	@hack/build-containerd.sh >/dev/null & ctd=$$!; \
	  hack/build-controlplane.sh all >/dev/null; cp=$$?; \
	  wait $$ctd && exit $$cp

verify: verify-static ## gofmt, go vet, vendor and generated-code freshness.
	hack/verify-codegen.sh

verify-static: ## gofmt, go vet, vendor freshness and no function over 80 lines: make verify without code generation (make test checks generated code once, with verify-fresh).
	hack/verify-gofmt.sh
	$(GO) vet ./...
	$(GO) run ./hack/funclen cmd pkg hack
	hack/verify-vendor.sh

verify-fresh: ## Code generation and its freshness check with a new, empty Go module cache (as on a fresh machine).
	hack/verify-fresh.sh

generate: ## Regenerate v1alpha1, deepcopy, clients and CRDs from pkg/apis/apps/v1beta1.
	hack/update-codegen.sh

FUZZTIME ?= 10s
FUZZ_TARGETS := FuzzParse:./pkg/imageref FuzzKeyring:./pkg/credentials FuzzCount:./pkg/nodetags FuzzDiff:./pkg/mergepatch
fuzz: ## Each fuzz target for FUZZTIME (default 10s), from its committed seeds; a crash fails and is saved under testdata/fuzz.
	GO="$(GO)" FUZZTIME=$(FUZZTIME) hack/fuzz.sh $(FUZZ_TARGETS)

BENCH_FLAGS ?=
bench: controlplane containerd bench-micro ## The benchmarks (S1-S5 against their floors with hollow nodes on a real control plane, NodeImage write cost, big image; about 55 minutes): prints the tables and the change against BENCHMARKS.md, and writes it. BENCH_FLAGS=-help lists its knobs.
	$(GO) run ./test/bench/cmd/bench $(BENCH_FLAGS)

bench-quick: controlplane ## The benchmark's quick mode (S1 up to 1,000 nodes, a small S2): a smoke test of the harness that fails only on a real regression (writes per node and job, ratios far past their targets).
	$(GO) test -count=1 -timeout 20m ./test/bench/...

bench-micro: ## Go micro-benchmarks of pkg/ (speed and memory of hot functions).
	$(GO) test -run '^$$' -bench . -benchmem ./pkg/...

clean: ## Remove build output.
	rm -rf $(BIN_DIR)
