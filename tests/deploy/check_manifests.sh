#!/usr/bin/env bash
# Renders every Kubernetes overlay (deploy/k8s/overlays/*) and checks it: schemas of every
# object, references, the Secret against each segue.yaml's ${VAR}s, `segue --check-config` on
# each rendered config (validate.js lists the checks). Registered in tests/CMakeLists.txt as
# deploy.manifests; by hand:
#
#   tests/deploy/check_manifests.sh build/segue
#
# Needs node, the npm packages of tests/deploy and a kubectl with kustomize v5, all installed by
# scripts/setup.sh --test. kubectl: $SEGUE_KUBECTL if set, else the pinned one setup.sh extracts
# to tests/deploy/kubectl/bin when the machine has none, else the one on PATH.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
segue="${1:?usage: check_manifests.sh SEGUE_BINARY}"

if [[ ! -f "$here/node_modules/kubernetes-models/package.json" ]]; then
  echo "check_manifests: tests/deploy/node_modules is missing: run scripts/setup.sh --test" >&2
  exit 1
fi
kubectl="${SEGUE_KUBECTL:-}"
if [[ -z "$kubectl" ]]; then
  if [[ -x "$here/kubectl/bin/kubectl" ]]; then
    kubectl="$here/kubectl/bin/kubectl"
  elif command -v kubectl >/dev/null; then
    kubectl="$(command -v kubectl)"
  else
    echo "check_manifests: no kubectl: run scripts/setup.sh --test" >&2
    exit 1
  fi
fi
echo "check_manifests: $("$kubectl" version --client 2>/dev/null | tr '\n' ' ')"
exec node "$here/validate.js" --root "$root" --kubectl "$kubectl" --segue "$segue"
