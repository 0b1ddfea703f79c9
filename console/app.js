// The console's shell: the key gate, the hash router (#/tasks, #/tasks/<id>, #/new, with
// ?clip=<task id>-<n>&provider=… to extend an output, #/deliveries, #/providers) and the
// header. Each page renders into <main> and stops its streams and timers when the route
// changes (its AbortSignal fires).

import { api, apiKey, setApiKey, ApiError } from './api.js';
import { h, replace, problemText } from './dom.js';
import * as tasks from './tasks.js';
import * as task from './task.js';
import * as create from './new.js';
import * as deliveries from './deliveries.js';
import * as providers from './providers.js';

const main = document.getElementById('main');
let current = null;  // AbortController of the page on screen

const routes = [
  [/^#\/tasks\/(ext_[A-Za-z0-9_-]+)$/, task, 'Task'],
  [/^#\/tasks$/, tasks, 'Tasks'],
  [/^#\/new(?:\?([^#]*))?$/, create, 'New extension'],
  [/^#\/deliveries(?:\?task=(ext_[A-Za-z0-9_-]+))?$/, deliveries, 'Deliveries'],
  [/^#\/providers$/, providers, 'Providers'],
];

function signIn(message) {
  document.getElementById('nav').hidden = true;
  document.getElementById('who').hidden = true;
  const input = h('input', { id: 'api-key', type: 'password', autocomplete: 'off', required: true,
    spellcheck: 'false', 'aria-describedby': 'key-help' });
  const error = h('p', { class: 'error', role: 'alert' }, message || '');
  const form = h('form', { class: 'card narrow', id: 'sign-in' },
    h('h2', {}, 'Sign in with an API key'),
    h('label', { for: 'api-key' }, 'API key'),
    input,
    h('p', { id: 'key-help', class: 'hint' },
      'Kept in this tab only (session storage) and sent as an Authorization header.'),
    h('button', { type: 'submit' }, 'Use this key'),
    error);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    setApiKey(input.value.trim());
    try {
      await whoAmI();
      if (!/^#\/.+/.test(location.hash)) location.hash = '#/tasks';
      else route();
    } catch (err) {
      setApiKey('');
      error.textContent = err instanceof ApiError && err.status === 401
        ? 'This key is not accepted.' : problemText(err);
    }
  });
  replace(main, form);
  input.focus();
}

async function whoAmI() {
  const c = await api('/v1/credits?limit=1');
  document.getElementById('tenant').textContent =
    `${c.tenant} · ${c.available} credits available`;
  document.getElementById('nav').hidden = false;
  document.getElementById('who').hidden = false;
}

// The header's balance, again: on every page change and whenever a page says credits moved
// (a task held, captured or refunded some: the 'segue:credits' event). Coalesced.
let balanceDue = null;
function refreshBalance() {
  if (balanceDue || !apiKey()) return;
  balanceDue = setTimeout(() => {
    balanceDue = null;
    whoAmI().catch(() => {});  // a failure leaves the last figure; the page shows the error
  }, 300);
}
window.addEventListener('segue:credits', refreshBalance);

function route() {
  if (current) current.abort();
  current = new AbortController();
  if (!apiKey()) return signIn();
  const hash = location.hash || '#/tasks';
  for (const [re, page, title] of routes) {
    const m = hash.match(re);
    if (!m) continue;
    document.title = `${title} · Segue console`;
    for (const a of document.querySelectorAll('#nav a'))
      a.toggleAttribute('aria-current', hash.startsWith(a.getAttribute('href')));
    replace(main);
    const signal = current.signal;
    refreshBalance();
    page.render(main, m.slice(1), signal).catch((e) => {
      if (signal.aborted) return;
      if (e instanceof ApiError && e.status === 401) {
        setApiKey('');
        return signIn('The key was refused; enter it again.');
      }
      if (!(e instanceof ApiError)) {
        // The gateway is not reachable (stopped, restarting, the network): the page tries
        // again on its own, as its live streams do.
        replace(main, h('p', { class: 'error', role: 'alert', id: 'unreachable' },
          `Cannot reach the gateway (${problemText(e)}); trying again…`));
        setTimeout(() => { if (!signal.aborted) route(); }, 2000);
        return;
      }
      replace(main, h('p', { class: 'error', role: 'alert' }, problemText(e)));
    });
    main.focus({ preventScroll: true });
    return;
  }
  location.hash = '#/tasks';
}

document.getElementById('sign-out').addEventListener('click', () => {
  setApiKey('');
  if (current) current.abort();
  signIn();
});
window.addEventListener('hashchange', route);

if (apiKey()) whoAmI().then(route, () => { setApiKey(''); signIn(); });
else signIn();
