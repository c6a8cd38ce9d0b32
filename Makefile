# Developer entry points. `make run` serves the API on :8080, starting a
# project-local PostgreSQL in .pgdata when no database is configured;
# `make test` runs every test: the service's (they start their own
# PostgreSQL) and the deploy stack's.

PG_BIN  ?= $(or $(patsubst %/pg_ctl,%,$(realpath $(shell command -v pg_ctl 2>/dev/null))),$(lastword $(sort $(wildcard /usr/lib/postgresql/*/bin))))
PGDATA  := $(CURDIR)/.pgdata
PGPORT  ?= 54329
# initdb and postgres refuse to run as root: run them as the postgres user.
AS_PG   := $(if $(filter 0,$(shell id -u)),runuser -u postgres --,)

.PHONY: run test bench build db db-stop

run:
	@if [ -z "$$DATABASE_URL$$DB_HOST" ]; then \
		$(MAKE) --no-print-directory db && \
		export DATABASE_URL="postgres://postgres@127.0.0.1:$(PGPORT)/conduit?sslmode=disable"; \
	fi; go run .

test:
	go test -race ./...
	cd cdk && go test ./...

# bench seeds a realistic dataset and measures every hot path over HTTP, the
# main read against its ceilings, and the built binary (README: Performance).
bench:
	go test -run '^$$' -bench . -benchtime 5s -count 1 .

# build is the Dockerfile's build command, for a local binary in bin/.
build:
	CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o bin/conduit .

# db starts the project-local PostgreSQL (creating it on first use).
db:
	@test -x "$(PG_BIN)/pg_ctl" || { echo "PostgreSQL server binaries not found: install them (Debian: apt-get install -y postgresql) or set DATABASE_URL"; exit 1; }
	@if [ ! -f "$(PGDATA)/PG_VERSION" ]; then \
		mkdir -p "$(PGDATA)" && $(if $(AS_PG),chown postgres "$(PGDATA)" &&) \
		$(AS_PG) "$(PG_BIN)/initdb" -D "$(PGDATA)" -U postgres -A trust -E UTF8 --locale=C >/dev/null; \
	fi
	@$(AS_PG) "$(PG_BIN)/pg_ctl" -D "$(PGDATA)" status >/dev/null 2>&1 || \
		$(AS_PG) "$(PG_BIN)/pg_ctl" -D "$(PGDATA)" -l "$(PGDATA)/server.log" -w \
			-o "-p $(PGPORT) -k $(PGDATA) -c listen_addresses=127.0.0.1" start >/dev/null
	@$(AS_PG) "$(PG_BIN)/psql" -h 127.0.0.1 -p $(PGPORT) -U postgres -tAc \
		"SELECT 1 FROM pg_database WHERE datname = 'conduit'" | grep -q 1 || \
		$(AS_PG) "$(PG_BIN)/createdb" -h 127.0.0.1 -p $(PGPORT) -U postgres conduit
	@echo "PostgreSQL is on 127.0.0.1:$(PGPORT) (data in .pgdata; stop it with make db-stop)"

db-stop:
	$(AS_PG) "$(PG_BIN)/pg_ctl" -D "$(PGDATA)" stop
