# pullwise — every entry point a developer or CI needs.
#   make demo    the end-to-end demo (see README)
#   make test    every test, plus the checks that generated files are current
#   make bench   the benchmarks, medians of several runs
GO      ?= go
BIN     := bin/pullwise
COUNT   ?= 5
# The version the binary reports: git's description of the checkout
# (a tag, else the commit; -dirty with uncommitted changes).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS := -X github.com/pullwise/pullwise/internal/version.stamped=$(VERSION)
# The package's version: the last tag (without its v) and the commit,
# as Debian orders them (0.0.0~gitCOMMIT before any tag).
DEB_VERSION ?= $(shell v=$$(git describe --tags --abbrev=0 2>/dev/null | sed 's/^v//'); echo "$${v:-0.0.0}~git$$(git rev-parse --short HEAD 2>/dev/null || echo devel)")
# goreleaser's nfpm, pinned, builds the Debian package.
NFPM    := $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0

.PHONY: all build install uninstall deb test-deb test test-clean test-faults test-integration demo demo-policy check vet fmt-check policies check-policies generate check-generated bench demo clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/pullwise

# Rebuild the built-in policy modules embedded in the binary. Commit the result.
policies:
	$(GO) run ./internal/cmd/buildpolicies

# Regenerate the SDK's JSON codec. Commit the result.
# The codec's import of easyjson's root package is removed: it only names
# the Marshaler interface, and the package imports net/http, which would be
# linked into every policy module.
generate:
	cd sdk && $(GO) run github.com/mailru/easyjson/easyjson -all -no_std_marshalers abi.go
	sed -i -e '/^\teasyjson "github.com\/mailru\/easyjson"$$/d' -e '/^\t_ easyjson.Marshaler$$/d' sdk/abi_easyjson.go
	$(GO) run ./internal/cmd/configschema > docs/config.schema.json

test: check
	$(GO) test -count=1 -skip '^TestFaults$$' ./...
	cd sdk && $(GO) test -count=1 -race ./...
	$(GO) test -count=1 -race ./plugins/ ./host/agent/ ./host/statedb/
	$(GO) test -count=1 -race -run '^Test(CounterRules|EditsMergedIntoOneAction|OneAppNeverWaitsForAnother|PresenceWithoutTheRegistry|ActionOnOneAppReportsThatApp)$$' ./host/app/
	@$(MAKE) --no-print-directory test-faults
	@$(MAKE) --no-print-directory test-clean

# Install on a device (as root): the binary, the systemd unit, a default
# configuration (an existing one is kept) and the state directory, 0700.
# DESTDIR stages the tree elsewhere (packaging, the install test).
PREFIX ?= /usr/local
install: build
	install -D -m 0755 bin/pullwise $(DESTDIR)$(PREFIX)/bin/pullwise
	install -d -m 0755 $(DESTDIR)/etc/systemd/system $(DESTDIR)/etc/pullwise $(DESTDIR)$(PREFIX)/share/doc/pullwise
	sed 's|/usr/local/bin/pullwise|$(PREFIX)/bin/pullwise|' packaging/systemd/pullwise.service > $(DESTDIR)/etc/systemd/system/pullwise.service
	chmod 0644 $(DESTDIR)/etc/systemd/system/pullwise.service
	test -e $(DESTDIR)/etc/pullwise/config.yaml || install -m 0600 packaging/config.yaml $(DESTDIR)/etc/pullwise/config.yaml
	install -m 0644 examples/config/device.yaml README.md SECURITY.md $(DESTDIR)$(PREFIX)/share/doc/pullwise/
	install -d -m 0700 $(DESTDIR)/var/lib/pullwise
	chmod 0700 $(DESTDIR)/var/lib/pullwise
	@echo "installed; on a device: systemctl daemon-reload && systemctl enable --now pullwise"

# Undo `make install` (the configuration and the state directory, with the
# apps' volumes, are kept: remove them by hand).
uninstall:
	-systemctl disable --now pullwise.service 2>/dev/null
	rm -f $(DESTDIR)$(PREFIX)/bin/pullwise $(DESTDIR)/etc/systemd/system/pullwise.service
	rm -rf $(DESTDIR)$(PREFIX)/share/doc/pullwise
	-systemctl daemon-reload 2>/dev/null
	@echo "uninstalled; kept /etc/pullwise and /var/lib/pullwise"

# The Debian package: dist/pullwise_VERSION_ARCH.deb (see packaging/nfpm.yaml).
deb: build
	rm -rf dist/pkgroot
	install -D -m 0755 $(BIN) dist/pkgroot/usr/bin/pullwise
	mkdir -p dist/pkgroot/lib/systemd/system dist/pkgroot/usr/share/bash-completion/completions \
		dist/pkgroot/usr/share/zsh/vendor-completions dist/pkgroot/usr/share/fish/vendor_completions.d
	sed 's|/usr/local/bin/pullwise|/usr/bin/pullwise|' packaging/systemd/pullwise.service > dist/pkgroot/lib/systemd/system/pullwise.service
	$(BIN) completion bash > dist/pkgroot/usr/share/bash-completion/completions/pullwise
	$(BIN) completion zsh > dist/pkgroot/usr/share/zsh/vendor-completions/_pullwise
	$(BIN) completion fish > dist/pkgroot/usr/share/fish/vendor_completions.d/pullwise.fish
	$(BIN) man dist/pkgroot/usr/share/man/man1
	gzip -9n dist/pkgroot/usr/share/man/man1/*.1
	VERSION=$(DEB_VERSION) ARCH=$$($(GO) env GOARCH) $(NFPM) package -f packaging/nfpm.yaml -p deb -t dist/

# Install the package on this machine (as root), check it, purge it: what
# CI does after make test (scripts/test-deb.sh).
test-deb: deb
	./scripts/test-deb.sh dist/pullwise_*.deb

# What the app networks of the tests leave on the host once every app is
# gone: the pullwise0 bridge and host-local's allocation directory (each
# app's address, NAT and port rules and namespace are released by the tests
# themselves). Not for a machine whose own agent runs apps.
test-clean:
	-@ip link del pullwise0 2>/dev/null || true
	-@rm -rf /var/lib/cni/networks/pullwise /run/pullwise/netns

# The fault-injection suite, verbose: each case logs what it broke and what
# it checked afterwards.
test-faults:
	$(GO) test -count=1 -v -run '^TestFaults$$' ./cmd/pullwise/

# The tests that start a private containerd and docker-registry (they also
# run in make test). Outside CI they skip if those are not installed.
test-integration:
	$(GO) test -count=1 ./host/... ./cmd/...

check: fmt-check vet check-policies check-generated

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	cd sdk && $(GO) vet ./... && GOOS=wasip1 GOARCH=wasm $(GO) vet .
	GOOS=wasip1 GOARCH=wasm $(GO) vet ./policies/... ./examples/policies/...

# CI proves the embedded modules are the build of the current sources.
check-policies:
	$(GO) run ./internal/cmd/buildpolicies -check

# Regenerates in place and fails if that changed anything committed.
check-generated: generate
	@git diff --exit-code --stat -- sdk/abi_easyjson.go docs/config.schema.json || { echo "a generated file was stale: commit the regenerated file"; exit 1; }

# Every benchmark, side by side with its peer where it has one, then one
# table of medians (bench-results/report.md) and JSON (results.json).
# About 12 minutes on 2 cores. BENCHMARKS.md quotes a run of it.
bench:
	mkdir -p bench-results
	$(GO) test -run '^$$' -bench 'DecideWarm' -benchtime 3000x -count $(COUNT) ./plugins/ | tee bench-results/decide.txt
	$(GO) test -run '^$$' -bench 'DecideFresh' -benchtime 200x -count $(COUNT) ./plugins/ | tee -a bench-results/decide.txt
	$(GO) test -run '^$$' -bench 'Load|ReloadAfterRelease|InstanceMemory' -benchtime 3x -count $(COUNT) ./plugins/ | tee bench-results/load.txt
	$(GO) test -run '^$$' -bench 'NoChangeCheck' -benchtime 3x -count 1 ./host/pull/ | tee bench-results/check.txt
	$(GO) test -run '^$$' -bench 'PullVsCtr' -benchtime 5x -count 1 ./host/pull/ | tee bench-results/pull.txt
	$(GO) test -run '^$$' -bench 'PullRateCap' -benchtime 3x -count 1 ./host/pull/ | tee bench-results/ratecap.txt
	$(GO) test -run '^$$' -bench 'CreateVsCtr' -benchtime 5x -count 1 ./host/app/ | tee bench-results/create.txt
	$(GO) test -run '^$$' -bench 'RefreshRound' -benchtime 3x -count 1 -timeout 30m ./host/app/ | tee bench-results/round.txt
	$(GO) test -run '^$$' -bench 'PeriodicShared' -benchtime 5x -count 1 ./host/app/ | tee bench-results/periodic.txt
	$(GO) test -run '^$$' -bench 'FleetSplay' -benchtime 1x -count 1 ./policies/periodic/ | tee bench-results/splay.txt
	$(GO) test -run '^$$' -bench 'BenchmarkAgent$$' -benchtime 5x -count 1 ./cmd/pullwise/ | tee bench-results/agent.txt
	$(GO) test -run '^$$' -bench 'AgentAction|Isolation' -benchtime 5x -count 1 -timeout 30m ./cmd/pullwise/ | tee bench-results/actions.txt
	$(GO) test -run '^$$' -bench 'StatusFile' -count $(COUNT) ./host/agent/ | tee bench-results/statusfile.txt
	$(GO) test -run '^$$' -bench 'CheckFleet' -count $(COUNT) ./host/config/ | tee bench-results/checkfleet.txt
	$(GO) test -run '^$$' -bench 'AgentIdleObserved' -benchtime 1x -count 1 ./cmd/pullwise/ | tee bench-results/idle.txt
	$(GO) test -run '^$$' -bench 'ControllerPoll' -benchtime 1x -count 1 ./cmd/pullwise/ | tee bench-results/controller.txt
	$(GO) test -run '^$$' -bench 'BenchmarkProbe' -benchtime 50x -count $(COUNT) ./host/containers/ | tee bench-results/health.txt
	$(GO) test -run '^$$' -bench 'HealthProbe' -benchtime 1x -count 1 ./cmd/pullwise/ | tee -a bench-results/health.txt
	$(GO) run ./internal/cmd/benchreport -json bench-results/results.json bench-results/decide.txt bench-results/load.txt \
		bench-results/check.txt bench-results/pull.txt bench-results/create.txt bench-results/round.txt bench-results/periodic.txt \
		bench-results/agent.txt bench-results/actions.txt bench-results/idle.txt bench-results/controller.txt bench-results/health.txt bench-results/ratecap.txt bench-results/splay.txt bench-results/statusfile.txt bench-results/checkfleet.txt | tee bench-results/report.md

demo:
	./scripts/demo.sh

demo-policy: build
	./scripts/demo-policy.sh

clean:
	rm -rf bin bench-results dist
