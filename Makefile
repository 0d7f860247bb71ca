# prepull: see README.md. `make help` lists the targets.
SHELL := /usr/bin/env bash
GO ?= go
# The product builds from the committed vendor/ directory.
export GOFLAGS := -mod=vendor
BIN_DIR ?= bin

.PHONY: help demo demo-stop build test test-unit test-integration e2e verify generate controlplane containerd bench clean

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

demo: controlplane containerd ## Run prepull locally (control plane, registry, 3 nodes, both binaries) and follow an example job.
	$(GO) run ./hack/demo

demo-stop: ## Stop a demo running in another terminal.
	@hack/demo-stop.sh

build: ## Build every package (and binaries under cmd/ into bin/).
	$(GO) build ./...
	@if [ -d cmd ]; then $(GO) build -o $(BIN_DIR)/ ./cmd/...; fi

test: verify test-unit test-integration e2e ## The full check CI runs: verify, unit, integration and end-to-end tests.

test-unit: ## Unit tests (no servers).
	$(GO) test -count=1 ./pkg/... $(if $(wildcard cmd),./cmd/...)

test-integration: controlplane containerd ## Tests against a real etcd, kube-apiserver and containerd.
	$(GO) test -count=1 -timeout 30m ./test/integration/...

e2e: controlplane containerd ## End to end: controller and three daemons on real containerd, a real registry and apiserver.
	$(GO) test -count=1 -timeout 20m ./test/e2e/...

controlplane: ## Build (or find cached) etcd, kube-apiserver and kubectl.
	@hack/build-controlplane.sh >/dev/null

containerd: ## Install Debian's containerd if missing (the daemon tests run their own instance).
	@hack/install-containerd.sh

verify: ## gofmt, go vet, vendor and generated-code freshness.
	hack/verify-gofmt.sh
	$(GO) vet ./...
	hack/verify-vendor.sh
	hack/verify-codegen.sh

generate: ## Regenerate v1alpha1, deepcopy, clients and CRDs from pkg/apis/apps/v1beta1.
	hack/update-codegen.sh

bench: ## Benchmarks (speed and memory are measured here, never in tests).
	$(GO) test -run '^$$' -bench . -benchmem ./pkg/...

clean: ## Remove build output.
	rm -rf $(BIN_DIR)
