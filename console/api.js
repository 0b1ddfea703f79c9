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

// An answer's body (JSON when it says so), or its problem+json as an ApiError.
function answer(status, type, text) {
  const data = (type || '').includes('json') ? JSON.parse(text) : text;
  if (status < 200 || status > 299) throw new ApiError(status, data);
  return data;
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
  return answer(r.status, r.headers.get('Content-Type'), await r.text());
}

// A POST of a FormData with upload progress, which fetch() does not report: this one call is an
// XMLHttpRequest, with the same headers and answers as api(). onProgress(sent, total) as the
// bytes go out; `signal` aborts it (an AbortError, as fetch gives).
export function upload(path, { body, headers: extra, signal, onProgress = () => {} }) {
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    const abort = () => x.abort();
    const done = (settle) => (arg) => {
      if (signal) signal.removeEventListener('abort', abort);
      settle(arg);
    };
    x.open('POST', path);
    const h = headers(extra);
    h.set('Accept', 'application/json');
    h.forEach((v, k) => x.setRequestHeader(k, v));
    x.upload.addEventListener('progress', (e) => {
      if (e.lengthComputable) onProgress(e.loaded, e.total);
    });
    x.addEventListener('load', done(() => {
      try {
        resolve(answer(x.status, x.getResponseHeader('Content-Type'), x.responseText));
      } catch (e) {
        reject(e);
      }
    }));
    const canceled = () => new DOMException('the upload was canceled', 'AbortError');
    x.addEventListener('error', done(() => reject(new TypeError('the upload failed (network error)'))));
    x.addEventListener('abort', done(() => reject(canceled())));
    if (signal) {
      if (signal.aborted) return reject(canceled());
      signal.addEventListener('abort', abort, { once: true });
    }
    x.send(body);
  });
}

// A file of the API (audio, cover) as a Blob, fetched with the key.
export async function apiBlob(path, signal) {
  const r = await fetch(path, { headers: headers(), signal });
  if (!r.ok) throw new ApiError(r.status, null);
  return r.blob();
}

// Where to play and decode an output's audio from: a signed link when the task has one
// (`wav_signed_url`, `mp3_signed_url`: no header needed, so an <audio> element streams it),
// else the API file fetched with the key. WAV first: every browser decodes it.
export function audioSource(audio) {
  if (!audio) return null;
  for (const fmt of ['wav', 'mp3']) {
    const signed = filePath(audio[`${fmt}_signed_url`]);
    if (signed) return { signed };
    const id = audio[`${fmt}_file_id`];
    if (id) return { path: `/v1/files/${encodeURIComponent(id)}` };
    const p = filePath(audio[`${fmt}_url`]);
    if (p) return { path: p };
  }
  return null;
}

// The Blob of an audioSource(): a signed link without the key, else the file with it.
export async function audioBlob(src, signal) {
  if (!src.signed) return apiBlob(src.path, signal);
  const r = await fetch(src.signed, { signal });
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
// While the server stays away (down, or answering 5xx), each failed attempt doubles the wait
// before the next, up to 30 s, jittered and never shorter than a 503's Retry-After: tabs left
// open do not call every second, nor all in the same second when it comes back.
export async function stream(path, { signal, onEvent, onState = () => {}, done = () => false }) {
  let lastId = '';
  let delay = 1000;  // the server's retry: field, else 1 s
  let failures = 0;  // attempts in a row that did not get the stream
  while (!signal.aborted) {
    let retryAfter = 0;
    try {
      const h = headers({ Accept: 'text/event-stream' });
      if (lastId) h.set('Last-Event-ID', lastId);
      const r = await fetch(path, { headers: h, signal, cache: 'no-store' });
      if (!r.ok) {
        retryAfter = 1000 * (Number(r.headers.get('Retry-After')) || 0);
        const type = r.headers.get('Content-Type') || '';
        throw new ApiError(r.status, type.includes('json') ? await r.json() : null);
      }
      onState('live');
      failures = 0;
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
      failures += 1;
    }
    onState('reconnecting');
    const ceiling = Math.min(30000, delay * 2 ** Math.max(0, failures - 1));
    const wait = Math.max(retryAfter, ceiling / 2 + Math.random() * (ceiling / 2));
    await new Promise((res) => setTimeout(res, wait));
  }
}
