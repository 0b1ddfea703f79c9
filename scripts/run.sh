#!/usr/bin/env bash
# The first README command: install what is missing, build, start segue on its embedded
# defaults (config/segue.yaml: http://127.0.0.1:8080). Extra arguments go to segue.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh segue
exec build/segue --config config/segue.yaml "$@"
