// A few DOM helpers: elements from a tag, attributes and children (text is always text, never
// HTML), and small formatting for the pages.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

export function age(iso) {
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
}

// A size for people: 950 B, 264.6 kB, 12.3 MB (decimal units, as files are shown).
export function bytes(n) {
  if (n < 1000) return `${n} B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} kB`;
  return `${(n / 1e6).toFixed(1)} MB`;
}

export function credits(c) {
  if (!c) return '–';
  return `${c.held} held · ${c.captured} captured · ${c.refunded} refunded`;
}

export function statusBadge(status) {
  return h('span', { class: `badge s-${status}` }, status);
}

let toastTimer;
export function toast(text, kind = 'info') {
  const t = document.getElementById('toast');
  t.textContent = text;
  t.className = `show ${kind}`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.className = ''; }, 5000);
}

// The problem+json of a failed call, as text for the person.
export function problemText(e) {
  if (!e) return 'failed';
  const p = e.problem;
  let text = e.message || String(e);
  // Each field's error, unless the detail says it already (a 422 about one field does).
  const more = p && Array.isArray(p.errors)
    ? p.errors.map((x) => `${x.field} ${x.message}`).filter((t) => !text.includes(t)) : [];
  if (more.length) text += ': ' + more.join('; ');
  return text;
}
