#!/usr/bin/env bash
# Installs what is missing (Debian 12, as root). `scripts/setup.sh` for running the gateway;
# `scripts/setup.sh --test` adds what the tests, fuzzers and benchmarks need.
set -euo pipefail

packages=(
  cmake ninja-build clang lld ccache pkg-config
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev
  libyaml-cpp-dev libssl-dev libsqlite3-dev libpq-dev libsndfile1-dev libmpg123-dev
)
if [[ "${1:-}" == "--test" ]]; then
  # libclang-rt-14-dev: the sanitizer runtimes (ASan/UBSan for fuzz.sh, TSan for tsan.sh).
  packages+=(libgtest-dev prometheus clang lld libfuzzer-14-dev libclang-rt-14-dev curl)
  # PostgreSQL 15 for the store suite, the PostgreSQL journeys and the multi-replica test
  # (scripts/pg.sh runs a throwaway server of its own; see below), nginx in front of replicas.
  packages+=(postgresql-15 postgresql-client-15 nginx-light util-linux)
  # The webhook test receiver (tests/receiver) runs on Node >= 18; keep a node that is there
  # already (e.g. from another repository, which ships its own npm).
  command -v node >/dev/null || packages+=(nodejs)
  command -v npm >/dev/null || packages+=(npm)
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
  # The receiver's npm dependencies, pinned by its package-lock.json: again only when missing
  # or when the lock changed since the last install (npm writes node_modules/.package-lock.json).
  receiver="$(cd "$(dirname "$0")/.." && pwd)/tests/receiver"
  if [[ ! -f "$receiver/node_modules/.package-lock.json" ||
        "$receiver/package-lock.json" -nt "$receiver/node_modules/.package-lock.json" ]]; then
    echo "setup: npm ci in tests/receiver" >&2
    (cd "$receiver" && npm ci --no-audit --no-fund >&2)
  fi
fi
