# The standard targets. `make run` and `make test` are all a newcomer needs (see README.md).
SHELL := /bin/bash
NODE_MODULES := node_modules/.package-lock.json

.PHONY: run test test-k8s lint generate bench bench-profile bench-soak bench-accuracy clean build typecheck

$(NODE_MODULES): package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

dist/.built: $(NODE_MODULES) $(shell find src generated clients/typescript/src clients/typescript/package.json -type f 2>/dev/null) tsconfig.json tsconfig.build.json
	npm run -s build
	@touch $@

build: dist/.built

run: dist/.built
	node dist/src/cli.js serve

test: dist/.built
	npm run -s typecheck
	bash scripts/test.sh

# The Kubernetes backend against a real control plane (../shared/k8s, or KUBECONFIG's cluster).
test-k8s: dist/.built
	bash scripts/test-k8s.sh

lint: $(NODE_MODULES)
	npm run -s lint

generate: $(NODE_MODULES)
	npm run -s generate

typecheck: $(NODE_MODULES)
	npm run -s typecheck

bench: dist/.built
	ATRIUM_BENCH_DATABASE_URL=$${ATRIUM_BENCH_DATABASE_URL:-$$(node scripts/bench/find-postgres.mjs)} node scripts/bench/run.mjs

# Where a request's CPU goes: top self-time functions and packages per figure (scripts/bench/profile.mjs).
bench-profile: dist/.built
	ATRIUM_BENCH_DATABASE_URL=$${ATRIUM_BENCH_DATABASE_URL:-$$(node scripts/bench/find-postgres.mjs)} node scripts/bench/profile.mjs

# Five minutes of mixed requests, the server's memory read after each slice (scripts/bench/soak.mjs).
bench-soak: dist/.built
	node scripts/bench/soak.mjs

# Each benchmark metric next to a standard Debian tool, with the ratios (scripts/bench/accuracy.mjs).
bench-accuracy: dist/.built
	node scripts/bench/accuracy.mjs

clean:
	rm -rf dist coverage .test-results.json .bench
