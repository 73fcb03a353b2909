# authgate. `make run` starts the embedded all-in-one dev stack; `make test` runs every test against real Postgres and Redis.
GO ?= go
export TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
export TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: build test run lint fmt-check bench bench-extauthz bench-deviceflow fuzz chaos

build:
	$(GO) build -o bin/ ./cmd/...

test:
	$(GO) test -race -count=1 -timeout 20m ./...

run:
	$(GO) run ./cmd/devstack

lint: fmt-check
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

bench: bench-extauthz bench-deviceflow

bench-extauthz:
	$(GO) run ./cmd/benchextauthz

bench-deviceflow:
	$(GO) test -run '^$$' -bench . -benchtime 3s ./internal/deviceflow/

# Short fuzz runs of every fuzz target (`make fuzz FUZZTIME=1m` for longer; `go test -fuzz=NAME ./pkg` runs one). A package
# whose tests do not build fails the run instead of silently contributing no targets.
FUZZTIME ?= 10s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  targets=$$($(GO) test -list '^Fuzz' $$pkg) || { echo "$$targets"; exit 1; }; \
	  for f in $$(echo "$$targets" | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

# ~60 s of mixed load on the real binaries while a private Redis is hung, killed and restarted and a private Postgres
# restarted and crashed; prints a table and fails on any lost approval, late revocation, wrong allow or unexpected answer.
# CHAOS_DURATION=2m for a longer run, CHAOS_REPORT=FILE to keep the table. Needs redis-server and PostgreSQL's server binaries.
CHAOS_DURATION ?= 60s
chaos:
	CHAOS=1 CHAOS_DURATION=$(CHAOS_DURATION) $(GO) test -count=1 -v -timeout 15m -run '^TestChaos$$' ./internal/chaos/
