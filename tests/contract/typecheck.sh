#!/usr/bin/env bash
# A client generated from docs/openapi.json by openapi-typescript type-checks a usage sample
# (sample.ts) with tsc --noEmit: the document is usable by a generator, and the shapes the sample
# relies on (task, outputs, events, problems, webhooks) are typed as the API answers them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$here/node_modules/.bin/openapi-typescript" "$here/../../docs/openapi.json" -o "$work/segue-api.ts" \
  --alphabetize >/dev/null
cp "$here/sample.ts" "$here/tsconfig.json" "$work/"
"$here/node_modules/.bin/tsc" --noEmit -p "$work/tsconfig.json"
echo "typecheck: $(grep -c . "$work/segue-api.ts") generated lines and sample.ts type-check"
