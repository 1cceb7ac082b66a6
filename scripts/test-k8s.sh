#!/usr/bin/env bash
# `make test-k8s`: the Kubernetes backend against a real kube-apiserver, controller-manager and
# scheduler, whose pods a node agent of the tests' own runs (test/fixtures/node-agent).
# The cluster: ATRIUM_TEST_KUBECONFIG (or KUBECONFIG) when set; else ../shared/k8s's control plane,
# started here (and stopped at the end) when it is not running already. It must have been built
# once with ../shared/k8s/build.sh, or ATRIUM_K8S_BUILD=1 builds it here when it is missing (CI does;
# about 9 minutes once per machine, cached outside the repository in $K8S_DIR, ~/.cache/kube-real).
# The node agent needs root (it routes pod addresses to lo).
# Prints "N passed, M failed" like scripts/test.sh, and leaves the report in .test-results-k8s.json.
set -uo pipefail
cd "$(dirname "$0")/.."

# ../shared/k8s: next to this checkout, next to one of its parents, or next to the checkout it was
# cloned from (a CI clone elsewhere on the machine).
find_shared() {
  local dir
  [ -n "${ATRIUM_K8S_SHARED:-}" ] && { echo "$ATRIUM_K8S_SHARED"; return; }
  for dir in "$(pwd)" "$(git config --get remote.origin.url 2>/dev/null || true)"; do
    [ -d "$dir" ] || continue
    dir=$(cd "$dir" && pwd)
    while [ "$dir" != "/" ]; do
      dir=$(dirname "$dir")
      [ -x "$dir/shared/k8s/up.sh" ] && { echo "$dir/shared/k8s"; return; }
    done
  done
  echo "$(cd .. && pwd)/shared/k8s"
}
shared=$(find_shared)
rm -f .test-results-k8s.json
state="${K8S_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-real}"
kubeconfig="${ATRIUM_TEST_KUBECONFIG:-${KUBECONFIG:-}}"

running() { # the control plane's API server answers
  local pid
  pid=$(cat "$state/run/kube-apiserver.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

if [ -z "$kubeconfig" ]; then
  if [ ! -x "$shared/up.sh" ]; then
    echo "test-k8s: no cluster: set KUBECONFIG to a test cluster's kubeconfig, or provide $shared (../shared/k8s)" >&2
    echo "0 passed, 1 failed"
    exit 1
  fi
  if [ "${ATRIUM_K8S_BUILD:-}" = 1 ] && { [ ! -x "$state/bin/kube-apiserver" ] || [ ! -x "$state/bin/kube-scheduler" ]; }; then
    echo "test-k8s: building the control plane once for this machine ($shared/build.sh, about 9 minutes)" >&2
    if ! "$shared/build.sh"; then
      echo "test-k8s: the control plane could not be built on this machine (it needs Debian's archive and apt-get); see the output above" >&2
      echo "0 passed, 1 failed"
      exit 1
    fi
  fi
  if [ ! -x "$state/bin/kube-apiserver" ] || [ ! -x "$state/bin/kube-scheduler" ]; then
    echo "test-k8s: the control plane is not built in $state: run $shared/build.sh once (about 9 minutes)" >&2
    echo "0 passed, 1 failed"
    exit 1
  fi
  if running; then
    echo "test-k8s: using the control plane already running ($state)"
  else
    "$shared/up.sh" --fresh || { echo "0 passed, 1 failed"; exit 1; }
    trap '"$shared/down.sh" >/dev/null 2>&1 || true' EXIT
  fi
  kubeconfig="$state/kubeconfig"
fi
echo "test-k8s: cluster of $kubeconfig" >&2

report=$(mktemp "${TMPDIR:-/tmp}/atrium-test-k8s-results.XXXXXX.json")
ATRIUM_TEST_KUBECONFIG="$kubeconfig" NODE_OPTIONS=--experimental-vm-modules \
  npx jest --runInBand --json --outputFile="$report" --testMatch '<rootDir>/test/k8s/**/*.test.ts' "$@"
status=$?
node scripts/test-summary.mjs "$report" || status=1
mv -f "$report" .test-results-k8s.json
exit $status
