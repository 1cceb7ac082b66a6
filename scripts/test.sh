#!/usr/bin/env bash
# Runs the whole suite: on SQLite always, and on PostgreSQL when one is reachable (or required).
# Prints the closing line "N passed, M failed" from jest's JSON report.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ -z "${ATRIUM_TEST_DATABASE_URL:-}" ]; then
  if node -e "require('net').connect(5432,'127.0.0.1').on('connect',()=>process.exit(0)).on('error',()=>process.exit(1))" 2>/dev/null; then
    export ATRIUM_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
  elif [ "${ATRIUM_TEST_REQUIRE_POSTGRES:-}" = "1" ]; then
    echo "PostgreSQL is required (ATRIUM_TEST_REQUIRE_POSTGRES=1) but nothing answers on 127.0.0.1:5432" >&2
    exit 1
  else
    echo "note: no PostgreSQL on 127.0.0.1:5432; running the SQLite half of the suite only" >&2
  fi
fi
[ -n "${ATRIUM_TEST_DATABASE_URL:-}" ] && echo "PostgreSQL tests use ${ATRIUM_TEST_DATABASE_URL%%\?*}" >&2

# Each run writes its own report (several runs may share a checkout), then leaves it where CI reads it.
report=$(mktemp "${TMPDIR:-/tmp}/atrium-test-results.XXXXXX.json")
# test/k8s needs a Kubernetes control plane: `make test-k8s` runs it (scripts/test-k8s.sh).
NODE_OPTIONS=--experimental-vm-modules npx jest --json --outputFile="$report" --testPathIgnorePatterns '/test/k8s/' "$@"
status=$?
node scripts/test-summary.mjs "$report" || status=1
mv -f "$report" .test-results.json
exit $status
