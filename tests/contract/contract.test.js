'use strict';
// The contract check can fail: real responses (the document's own examples, taken from the
// integration tests) pass, and each with a deliberate drift (a renamed field, an undocumented
// status or path, a broken event stream) is refused. Run by CTest as contract.selftest.

const test = require('node:test');
const assert = require('node:assert');
const { load, check, checkWebhook } = require('./contract');

const c = load();
const ok = (r) => assert.deepStrictEqual(check(c, r), []);
const refused = (r, pattern) => {
  const problems = check(c, r);
  assert.ok(problems.length > 0, 'the drift was not caught');
  if (pattern) assert.match(problems.join('\n'), pattern);
};
const example = (p, method, status, type = 'application/json', name) => {
  const media = c.doc.paths[p][method].responses[status].content[type];
  return structuredClone(name ? media.examples[name].value : media.example);
};
const json = (method, target, status, body, type = 'application/json') => ({
  method, target, status, content_type: type, body: JSON.stringify(body), body_bytes: 1,
});
const rename = (o, from, to) => {
  o[to] = o[from];
  delete o[from];
  return o;
};

test('every example in the document keeps the contract', () => {
  let n = 0;
  for (const [template, item] of Object.entries(c.doc.paths))
    for (const [method, op] of Object.entries(item)) {
      if (!op.responses) continue;
      for (const [status, resp] of Object.entries(op.responses)) {
        const r = resp.$ref ? c.doc.components.responses[resp.$ref.split('/').pop()] : resp;
        for (const [type, media] of Object.entries(r.content || {})) {
          const values = [];
          if (media.example !== undefined) values.push(media.example);
          for (const e of Object.values(media.examples || {})) values.push(e.value);
          for (const v of values) {
            const target = template.replace(/\{[^}]+\}/g, 'ext_x');
            const body = typeof v === 'string' ? v : JSON.stringify(v);
            // A shared problem response's example came from one route: its status is checked.
            assert.deepStrictEqual(check(c, { method: method.toUpperCase(), target, status: Number(status), content_type: type, body }), [], `${method} ${template} ${status}`);
            n++;
          }
        }
      }
    }
  assert.ok(n >= 20, `only ${n} examples`);
});

test('a renamed field of a task is refused', () => {
  const task = example('/v1/extensions/{id}', 'get', '200', 'application/json', 'succeeded');
  ok(json('GET', '/v1/extensions/' + task.id, 200, task));
  refused(json('GET', '/v1/extensions/' + task.id, 200, rename(structuredClone(task), 'status', 'state')), /state|status/);
  const nested = structuredClone(task);
  rename(nested.outputs[0].audio, 'mp3_url', 'mp3');
  refused(json('GET', '/v1/extensions/' + task.id, 200, nested), /mp3/);
  const output = structuredClone(task);
  rename(output.outputs[0], 'lyrics_timestamped', 'timestamped_lyrics');
  refused(json('GET', '/v1/extensions/' + task.id, 200, output), /timestamped_lyrics/);
});

test('a renamed field of an event, a problem, credits is refused', () => {
  const events = example('/v1/extensions/{id}/events', 'get', '200');
  ok(json('GET', '/v1/extensions/ext_a/events', 200, events));
  const drifted = structuredClone(events);
  rename(drifted.data[1].data, 'next_provider', 'next');
  refused(json('GET', '/v1/extensions/ext_a/events', 200, drifted), /next/);
  const problem = { type: 'https://segue.dev/problems/not_found', title: 'Not found', status: 404, code: 'not_found', detail: 'no such extension' };
  ok(json('GET', '/v1/extensions/ext_a', 404, problem, 'application/problem+json'));
  refused(json('GET', '/v1/extensions/ext_a', 404, rename({ ...problem }, 'code', 'error_code'), 'application/problem+json'));
  refused(json('GET', '/v1/extensions/ext_a', 404, { ...problem, code: 'no_such_thing' }, 'application/problem+json'));
  refused(json('GET', '/v1/extensions/ext_a', 404, { ...problem, code: 'conflict' }, 'application/problem+json'), /another status/);
  const credits = example('/v1/credits', 'get', '200');
  refused(json('GET', '/v1/credits', 200, rename(credits, 'available', 'avail')), /avail/);
});

test('an undocumented status, method, path or Content-Type is refused', () => {
  const problem = { type: 'https://segue.dev/problems/gone', title: 'Gone', status: 410, code: 'gone' };
  refused(json('GET', '/v1/extensions/ext_a', 410, problem, 'application/problem+json'), /not documented/);
  refused(json('PUT', '/v1/extensions/ext_a', 200, {}), /not documented/);
  refused(json('GET', '/v1/teapots', 200, {}), /not in the document/);
  refused(json('GET', '/v1/providers', 200, example('/v1/providers', 'get', '200'), 'text/html'), /Content-Type/);
  // The server's own answers are documented: an unknown path's 404, a known path's 405.
  ok(json('GET', '/v1/teapots', 404, { type: 'https://segue.dev/problems/not_found', title: 'Not found', status: 404, code: 'not_found' }, 'application/problem+json'));
});

test('a Server-Sent Events stream is checked event by event', () => {
  const stream = example('/v1/extensions/{id}/events', 'get', '200', 'text/event-stream');
  const r = { method: 'GET', target: '/v1/extensions/ext_a/events', status: 200, content_type: 'text/event-stream', body: stream };
  ok(r);
  refused({ ...r, body: stream.replace('"seq":2,', '"sequence":2,') }, /sequence|seq/);
  refused({ ...r, body: stream.replace('event: extension.submitted', 'event: extension.sent') }, /differ/);
});

test('a webhook payload is checked against the webhook of its type', () => {
  // A delivery body as the dispatcher builds it: the event's data plus event_id and seq.
  for (const event of example('/v1/extensions/{id}/events', 'get', '200').data) {
    const payload = { type: event.type, timestamp: event.created_at, data: { ...event.data, event_id: event.id, seq: event.seq } };
    assert.deepStrictEqual(checkWebhook(c, JSON.stringify(payload), 'hook'), [], event.type);
    const drifted = structuredClone(payload);
    rename(drifted.data, 'event_id', 'eventId');
    assert.match(checkWebhook(c, JSON.stringify(drifted), 'hook').join('\n'), /event_id|eventId/);
  }
  assert.match(checkWebhook(c, JSON.stringify({ type: 'extension.exploded', timestamp: '2026-01-01T00:00:00.000Z', data: {} }), 'hook').join(''), /not in the document/);
});
