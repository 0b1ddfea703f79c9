'use strict';
// The contract: docs/openapi.json compiled into JSON Schema 2020-12 validators (Ajv), and the
// check of one recorded HTTP response (method, target, status, Content-Type, body) against the
// operation the document gives for it. Used by validate.js (the integration tests' responses)
// and contract.test.js (a deliberate drift must fail).

const fs = require('node:fs');
const path = require('node:path');
const Ajv2020 = require('ajv/dist/2020').default;
const addFormats = require('ajv-formats').default;

const DOCUMENT = path.join(__dirname, '..', '..', 'docs', 'openapi.json');
const DOC_ID = 'https://segue.dev/openapi.json';

// The paths the document must cover; anything else (the fakes' /_control, drop-in and console
// paths of their own) is not part of this contract.
const SYSTEM_PATHS = new Set(['/healthz', '/readyz', '/metrics', '/openapi.json']);
function inScope(p) {
  return p.startsWith('/v1/') || SYSTEM_PATHS.has(p);
}

function load(file = DOCUMENT) {
  const doc = JSON.parse(fs.readFileSync(file, 'utf8'));
  // allErrors: a report names every drifted field at once. strict: the OpenAPI keywords
  // (discriminator, example, x-...) are declared below so an unknown keyword is still an error.
  // discriminator: a tagged union is checked against the variant its tag names (precise errors);
  // Ajv takes the tag from each variant's const, so the mapping (for generators) is left out.
  const ajv = new Ajv2020({ allErrors: true, strict: true, strictTypes: false, strictRequired: false, discriminator: true });
  addFormats(ajv);
  ajv.addVocabulary(['components', 'example', 'x-segue-sse-data', 'x-segue-sse-event', 'xml', 'externalDocs']);
  // Only components are schemas; the rest of the document is reached by JSON pointer.
  const schemas = structuredClone(doc.components.schemas);
  for (const schema of Object.values(schemas)) if (schema.discriminator) delete schema.discriminator.mapping;
  ajv.addSchema({ $id: DOC_ID, components: { schemas } });
  const cache = new Map();
  const validator = (pointer) => {
    if (!cache.has(pointer)) {
      const fn = ajv.getSchema(DOC_ID + '#' + pointer);
      if (!fn) throw new Error('no schema at ' + pointer);
      cache.set(pointer, fn);
    }
    return cache.get(pointer);
  };
  // Inline schemas (in paths) are compiled on their own, their $refs resolved against the doc.
  const inline = new Map();
  const compile = (schema) => {
    if (schema.$ref && schema.$ref.startsWith('#/components/schemas/') && Object.keys(schema).length === 1)
      return validator(schema.$ref.slice(1));
    const key = JSON.stringify(schema);
    if (!inline.has(key)) {
      const rebased = JSON.parse(key.replace(/"#\/components\//g, '"' + DOC_ID + '#/components/'));
      inline.set(key, ajv.compile(rebased));
    }
    return inline.get(key);
  };
  const routes = Object.keys(doc.paths).map((template) => ({
    template,
    segments: template.split('/'),
  }));
  return { doc, ajv, validator, compile, routes };
}

function deref(c, obj) {
  while (obj && obj.$ref) {
    const parts = obj.$ref.replace(/^#\//, '').split('/');
    obj = parts.reduce((o, k) => (o ? o[k.replace(/~1/g, '/').replace(/~0/g, '~')] : undefined), c.doc);
  }
  return obj;
}

function matchRoute(c, p) {
  const parts = p.split('/');
  // A literal segment beats a parameter (as the gateway's router: templates never overlap today).
  let best = null;
  for (const r of c.routes) {
    if (r.segments.length !== parts.length) continue;
    let literal = 0;
    let ok = true;
    for (let i = 0; i < parts.length && ok; i++) {
      const s = r.segments[i];
      if (s.startsWith('{') && s.endsWith('}')) ok = parts[i] !== '';
      else if (s === parts[i]) literal++;
      else ok = false;
    }
    if (ok && (!best || literal > best.literal)) best = { route: r, literal };
  }
  return best && best.route;
}

function formatErrors(errors) {
  return (errors || [])
    .slice(0, 8)
    .map((e) => `${e.instancePath || '/'} ${e.message}${e.params && e.params.additionalProperty ? ` (${e.params.additionalProperty})` : ''}${e.params && e.params.unevaluatedProperty ? ` (${e.params.unevaluatedProperty})` : ''}`)
    .join('; ');
}

function validateJson(c, schema, text, what) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    return [`${what}: body is not JSON (${e.message})`];
  }
  const fn = c.compile(schema);
  if (fn(value)) return [];
  return [`${what}: ${formatErrors(fn.errors)}`];
}

// Server-Sent Events: every frame's data is the schema named by x-segue-sse-data; its `event:` is
// x-segue-sse-event when the document names one, else the event's type, with `id:` its seq.
function validateSse(c, schema, text, what) {
  const problems = [];
  const pointer = schema['x-segue-sse-data'];
  if (!pointer) return [`${what}: the text/event-stream schema names no x-segue-sse-data`];
  const fn = c.validator(pointer.slice(1));
  for (const frame of text.split('\n\n')) {
    const lines = frame.split('\n').filter((l) => l !== '' && !l.startsWith(':'));
    if (lines.length === 0) continue;
    const fields = {};
    for (const l of lines) {
      const i = l.indexOf(':');
      const k = i < 0 ? l : l.slice(0, i);
      fields[k] = (i < 0 ? '' : l.slice(i + 1)).replace(/^ /, '');
    }
    if ('retry' in fields && lines.length === 1) continue;
    if (!('data' in fields)) {
      problems.push(`${what}: a frame without data: ${JSON.stringify(frame)}`);
      continue;
    }
    let ev;
    try {
      ev = JSON.parse(fields.data);
    } catch (e) {
      problems.push(`${what}: a data line that is not JSON`);
      continue;
    }
    const fixed = schema['x-segue-sse-event'];
    if (!fn(ev)) problems.push(`${what}: frame ${fields.id ?? fields.event}: ${formatErrors(fn.errors)}`);
    else if (fixed !== undefined && fields.event !== fixed)
      problems.push(`${what}: a frame's event is ${fields.event}, not ${fixed}`);
    else if (fixed === undefined && (fields.event !== ev.type || String(ev.seq) !== fields.id))
      problems.push(`${what}: frame id/event (${fields.id}/${fields.event}) differ from the event's seq/type`);
  }
  return problems;
}

function mediaMatch(content, type) {
  if (content[type]) return content[type];
  const major = type.split('/')[0];
  return content[major + '/*'] || content['*/*'];
}

// Problems with one recorded response; [] when it keeps the contract. `r`: {method, target,
// status, content_type, body?, body_bytes?}. `seen` (a Set, optional) collects the documented
// responses it matched, as "METHOD /template status".
function check(c, r, seen) {
  const p = r.target.split('?')[0];
  const what = `${r.method} ${r.target.length > 120 ? r.target.slice(0, 120) + '...' : r.target} -> ${r.status}`;
  const ct = (r.content_type || '').split(';')[0].trim().toLowerCase();
  const route = matchRoute(c, p);
  const isProblem = ct === 'application/problem+json';
  const asProblem = () => (isProblem && r.body !== undefined
    ? validateJson(c, { $ref: '#/components/schemas/Problem' }, r.body, what)
    : [`${what}: expected an application/problem+json answer, got ${ct || 'no Content-Type'}`]);
  if (!route) {
    // No route: the server's 404 (documented in info.description), a problem like any other.
    if (r.status !== 404) return [`${what}: the path is not in the document`];
    return asProblem();
  }
  const item = c.doc.paths[route.template];
  // A CORS preflight, answered by the server for any path (info.description): no body.
  if (r.method === 'OPTIONS' && r.status === 204)
    return (r.body_bytes || 0) > 0 ? [`${what}: a preflight's 204 with a body`] : [];
  const method = r.method === 'HEAD' ? 'get' : r.method.toLowerCase();
  const op = item[method];
  if (!op) {
    if (r.status !== 405) return [`${what}: ${r.method} is not documented on ${route.template}`];
    return asProblem();
  }
  const status = String(r.status);
  let resp = op.responses[status] || op.responses[status[0] + 'XX'] || op.responses.default;
  if (!resp) return [`${what}: status ${status} is not documented for ${method.toUpperCase()} ${route.template}`];
  if (seen) seen.add(`${method.toUpperCase()} ${route.template} ${op.responses[status] ? status : status[0] + 'XX'}`);
  resp = deref(c, resp);
  const out = [];
  if (!resp.content) {
    if ((r.body_bytes || 0) > 0 && r.method !== 'HEAD') out.push(`${what}: a body where the document has none`);
    return out;
  }
  const media = mediaMatch(resp.content, ct);
  if (!media) return [`${what}: Content-Type ${ct || '(none)'} is not documented (${Object.keys(resp.content).join(', ')})`];
  if (r.method === 'HEAD' || r.body === undefined) return out;
  const schema = media.schema || {};
  if (ct === 'text/event-stream') return validateSse(c, schema, r.body, what);
  if (ct === 'application/json' || ct.endsWith('+json')) {
    out.push(...validateJson(c, schema, r.body, what));
    if (isProblem && out.length === 0) {
      const body = JSON.parse(r.body);
      if (body.status !== r.status) out.push(`${what}: the problem's status ${body.status} is not the HTTP status`);
      const code = c.doc.components.schemas.ProblemCode.oneOf.find((x) => x.const === body.code);
      if (code && !code.description.startsWith(status + ':'))
        out.push(`${what}: code ${body.code} is documented with another status (${code.description.slice(0, 3)})`);
    }
  }
  return out;
}

// Problems with one webhook delivery body (as the test receiver, tests/receiver, recorded it):
// valid against the request body of the document's webhook for its `type`.
function checkWebhook(c, text, what) {
  let body;
  try {
    body = JSON.parse(text);
  } catch (e) {
    return [`${what}: the webhook body is not JSON`];
  }
  const hook = c.doc.webhooks[body.type];
  if (!hook) return [`${what}: webhook type ${body.type} is not in the document's webhooks`];
  return validateJson(c, hook.post.requestBody.content['application/json'].schema, text, `${what} (${body.type})`);
}

// The webhook bodies inside a recorded answer of the test receiver's GET /_control/deliveries.
function webhookBodies(r) {
  if (!r.target.startsWith('/_control/deliveries') || r.status !== 200 || r.body === undefined) return [];
  let v;
  try {
    v = JSON.parse(r.body);
  } catch (e) {
    return [];
  }
  if (!v || !Array.isArray(v.deliveries)) return [];
  return v.deliveries
    // A drop-in shape's delivery (Segue-Webhook-Format: a provider's own webhook shape, README
    // "Drop-in") is not one of this document's events.
    .filter((d) => d && d.verified === true && typeof d.body_text === 'string' && d.headers && d.headers['webhook-signature'] &&
      !d.headers['segue-webhook-format'])
    .map((d) => ({ id: d.id, text: d.body_text }));
}

module.exports = { load, check, checkWebhook, webhookBodies, inScope, DOCUMENT };
