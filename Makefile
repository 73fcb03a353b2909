# authgate. `make run` starts the embedded all-in-one dev stack; `make test` runs every test against real Postgres and Redis.
GO ?= go
export TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
export TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: build test run lint fmt-check bench bench-extauthz bench-deviceflow fuzz

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

# Short fuzz runs of every fuzz target; `go test -fuzz=NAME ./pkg` runs one for longer.
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 10s $$pkg || exit 1; \
	  done; \
	done
