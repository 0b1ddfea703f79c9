// The public /v1 API, called with the key the person entered. The key lives in this tab's
// sessionStorage only: it is sent as an Authorization header, never put in a URL.

const KEY = 'segue.api_key';

export function apiKey() {
  return sessionStorage.getItem(KEY) || '';
}
export function setApiKey(k) {
  if (k) sessionStorage.setItem(KEY, k);
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, problem) {
    const detail = problem && typeof problem === 'object'
      ? (problem.detail || problem.title || `HTTP ${status}`)
      : `HTTP ${status}`;
    super(detail);
    this.status = status;
    this.problem = problem && typeof problem === 'object' ? problem : null;
  }
}

function headers(extra) {
  const h = new Headers(extra || {});
  h.set('Authorization', `Bearer ${apiKey()}`);
  return h;
}

// JSON in and out. `body` may be a FormData (multipart) or a plain object (JSON).
export async function api(path, { method = 'GET', body, headers: extra, signal } = {}) {
  const h = headers(extra);
  let payload = body;
  if (body !== undefined && !(body instanceof FormData)) {
    h.set('Content-Type', 'application/json');
    payload = JSON.stringify(body);
  }
  h.set('Accept', 'application/json');
  const r = await fetch(path, { method, headers: h, body: payload, signal, cache: 'no-store' });
  const type = r.headers.get('Content-Type') || '';
  const data = type.includes('json') ? await r.json() : await r.text();
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

// A file of the API (audio, cover) as a Blob, fetched with the key.
export async function apiBlob(path, signal) {
  const r = await fetch(path, { headers: headers(), signal });
  if (!r.ok) throw new ApiError(r.status, null);
  return r.blob();
}

// The path of a /v1/files link (absolute or not), or '' when the URL is elsewhere: the console
// only talks to its own origin.
export function filePath(url) {
  if (!url) return '';
  try {
    const u = new URL(url, location.origin);
    if (!u.pathname.startsWith('/v1/files/')) return '';
    return u.pathname + u.search;
  } catch {
    return '';
  }
}

// Server-Sent Events over fetch (EventSource cannot send an Authorization header). Calls
// onEvent({event, id, data}) per frame; reconnects with Last-Event-ID until `signal` aborts or
// the server ends a stream that `done()` says is complete. onState('live'|'reconnecting').
export async function stream(path, { signal, onEvent, onState = () => {}, done = () => false }) {
  let lastId = '';
  let delay = 1000;
  while (!signal.aborted) {
    try {
      const h = headers({ Accept: 'text/event-stream' });
      if (lastId) h.set('Last-Event-ID', lastId);
      const r = await fetch(path, { headers: h, signal, cache: 'no-store' });
      if (!r.ok) {
        const type = r.headers.get('Content-Type') || '';
        throw new ApiError(r.status, type.includes('json') ? await r.json() : null);
      }
      onState('live');
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done: end } = await reader.read();
        if (end) break;
        buf += value.replace(/\r\n?/g, '\n');
        let cut;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          const frame = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          const ev = { event: 'message', id: '', data: '' };
          const data = [];
          for (const line of frame.split('\n')) {
            if (!line || line.startsWith(':')) continue;
            const colon = line.indexOf(':');
            const field = colon < 0 ? line : line.slice(0, colon);
            const val = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
            if (field === 'event') ev.event = val;
            else if (field === 'id') ev.id = val;
            else if (field === 'data') data.push(val);
            else if (field === 'retry' && /^\d+$/.test(val)) delay = Number(val);
          }
          if (ev.id) lastId = ev.id;
          if (data.length) {
            ev.data = data.join('\n');
            onEvent(ev);
          }
        }
      }
      if (done()) return;
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && e.status >= 400 && e.status < 500) throw e;
    }
    onState('reconnecting');
    await new Promise((res) => setTimeout(res, delay));
  }
}
