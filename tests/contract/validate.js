#!/usr/bin/env node
'use strict';
// Validates every response the integration tests recorded (tests/support/contract_log.cpp,
// SEGUE_CONTRACT_LOG=<dir>: one JSON line per response) against docs/openapi.json. Fails on any
// response that breaks the contract: a body its schema refuses, a status or Content-Type the
// document does not give for that operation, a /v1 path it does not have.
//
//   node validate.js <log dir> [--min N]     (CTest: contract.validate, after the integration tests)

const fs = require('node:fs');
const path = require('node:path');
const { load, check, checkWebhook, webhookBodies, inScope } = require('./contract');

function main(argv) {
  const dir = argv[0];
  let min = 1;
  const i = argv.indexOf('--min');
  if (i >= 0) min = Number(argv[i + 1]);
  if (!dir) {
    console.error('usage: validate.js <log dir> [--min N]');
    return 2;
  }
  const c = load();
  const files = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.jsonl')) : [];
  let checked = 0;
  let skipped = 0;
  const hooks = new Map();  // webhook-id + body -> the test that saw it (each delivery once)
  const failures = [];
  const seen = new Set();
  for (const f of files) {
    for (const line of fs.readFileSync(path.join(dir, f), 'utf8').split('\n')) {
      if (!line) continue;
      const r = JSON.parse(line);
      if (!inScope(r.target.split('?')[0])) {
        for (const h of webhookBodies(r)) hooks.set(h.id + '\n' + h.text, r.test || '?');
        skipped++;
        continue;
      }
      checked++;
      const problems = check(c, r, seen);
      for (const p of problems) failures.push(`${p}\n    in ${r.test || '?'}`);
    }
  }
  // The webhook payloads the test receiver got (verified signatures only): the document's webhooks.
  for (const [key, testName] of hooks) {
    const [id, text] = [key.slice(0, key.indexOf('\n')), key.slice(key.indexOf('\n') + 1)];
    for (const p of checkWebhook(c, text, `webhook ${id}`)) failures.push(`${p}\n    in ${testName}`);
  }
  // What no test answered, for the reader: each operation's own answers (the server-wide
  // 408/413/431/500/503 every operation lists are left out).
  const serverWide = new Set(['408', '413', '431', '500', '503']);
  const documented = [];
  for (const [template, item] of Object.entries(c.doc.paths))
    for (const [method, op] of Object.entries(item))
      if (op && op.responses)
        for (const status of Object.keys(op.responses))
          if (!serverWide.has(status)) documented.push(`${method.toUpperCase()} ${template} ${status}`);
  const untested = documented.filter((d) => !seen.has(d));
  console.log(`contract: ${documented.length - untested.length} of the ${documented.length} documented answers (server-wide errors aside) were seen; not seen: ${untested.join(', ') || 'none'}`);
  console.log(`contract: ${checked} responses checked against docs/openapi.json (${skipped} outside it: fakes, other paths) from ${files.length} test processes, and ${hooks.size} webhook deliveries`);
  if (failures.length) {
    const unique = [...new Set(failures)];
    console.log(`contract: ${unique.length} violation(s):`);
    for (const f of unique.slice(0, 50)) console.log('  ' + f);
    if (unique.length > 50) console.log(`  ... and ${unique.length - 50} more`);
  }
  if (checked < min) {
    console.log(`contract: fewer than ${min} responses recorded: run the integration tests with SEGUE_CONTRACT_LOG=${dir} first`);
    return 1;
  }
  return failures.length ? 1 : 0;
}

process.exitCode = main(process.argv.slice(2));
