// Tasks: the tenant's newest tasks, live (GET /v1/extensions as Server-Sent Events: a `task`
// frame whenever one is created or changes), with filters and older pages on demand.

import { api, stream } from './api.js';
import { h, replace, age, credits, statusBadge } from './dom.js';

const STATUSES = ['queued', 'submitted', 'running', 'succeeded', 'partially_succeeded', 'failed',
  'canceled'];

export async function render(main, _params, signal) {
  const byId = new Map();
  const status = h('select', { id: 'filter-status' },
    h('option', { value: '' }, 'any status'), STATUSES.map((s) => h('option', { value: s }, s)));
  const provider = h('select', { id: 'filter-provider' }, h('option', { value: '' }, 'any provider'));
  const search = h('input', { id: 'filter-id', type: 'search', placeholder: 'ext_…' });
  const live = h('span', { class: 'live', id: 'live-state' }, 'connecting…');
  const body = h('tbody', { id: 'task-rows' });
  const empty = h('p', { class: 'hint', id: 'no-tasks', hidden: true }, 'No tasks yet.');
  const older = h('button', { type: 'button', id: 'older', hidden: true }, 'Older tasks');
  let oldestLoaded = '';

  main.append(
    h('div', { class: 'bar' }, h('h2', {}, 'Tasks'), live,
      h('a', { class: 'button', href: '#/new' }, 'New extension')),
    h('form', { class: 'filters', role: 'search', onsubmit: (e) => e.preventDefault() },
      h('label', {}, 'Status ', status), h('label', {}, 'Provider ', provider),
      h('label', {}, 'Task id ', search)),
    h('div', { class: 'scroll' }, h('table', { class: 'tasks' },
      h('thead', {}, h('tr', {}, ['Task', 'Status', 'Provider', 'Age', 'Credits'].map((c) =>
        h('th', { scope: 'col' }, c)))),
      body)),
    empty, older);

  const draw = () => {
    const rows = [...byId.values()].sort((a, b) => (a.id < b.id ? 1 : -1));
    const providers = new Set(rows.map((t) => t.provider).filter(Boolean));
    for (const p of providers)
      if (![...provider.options].some((o) => o.value === p)) provider.append(h('option', { value: p }, p));
    const shown = rows.filter((t) => (!status.value || t.status === status.value) &&
      (!provider.value || t.provider === provider.value) &&
      (!search.value || t.id.includes(search.value.trim())));
    replace(body, shown.map((t) => h('tr', { dataset: { id: t.id, status: t.status } },
      h('td', {}, h('a', { href: `#/tasks/${t.id}` }, t.id)),
      h('td', {}, statusBadge(t.status)),
      h('td', {}, t.provider || '–'),
      h('td', { title: t.created_at }, age(t.created_at)),
      h('td', {}, credits(t.credits)))));
    empty.hidden = shown.length > 0;
    // The filters look at the tasks loaded so far (the server filters nothing): say so.
    empty.textContent = !rows.length ? 'No tasks yet.'
      : older.hidden ? 'No task matches the filters.'
        : 'No loaded task matches the filters; older ones are searched once loaded (Older tasks).';
  };
  for (const el of [status, provider]) el.addEventListener('change', draw);
  // A whole task id is looked up directly, loaded or not.
  let lookup = null;
  search.addEventListener('input', () => {
    draw();
    const id = search.value.trim();
    if (!/^ext_[0-9a-z]{26}$/.test(id) || byId.has(id)) return;
    if (lookup) lookup.abort();
    lookup = new AbortController();
    const mine = lookup;
    signal.addEventListener('abort', () => mine.abort());
    api(`/v1/extensions/${id}`, { signal: mine.signal }).then((t) => {
      byId.set(t.id, t);
      draw();
    }, () => {});  // not the tenant's, or no such task: the filter's own message stands
  });
  older.addEventListener('click', async () => {
    const page = await api(`/v1/extensions?limit=50&before=${encodeURIComponent(oldestLoaded)}`,
      { signal });
    for (const t of page.data) byId.set(t.id, t);
    if (page.data.length) oldestLoaded = page.data[page.data.length - 1].id;
    older.hidden = !page.has_more;
    draw();
  });

  // The first page once (to learn whether there are older ones), then the live stream.
  const first = await api('/v1/extensions?limit=100', { signal });
  for (const t of first.data) byId.set(t.id, t);
  if (first.data.length) oldestLoaded = first.data[first.data.length - 1].id;
  older.hidden = !first.has_more;
  draw();
  const ages = setInterval(draw, 10000);
  signal.addEventListener('abort', () => clearInterval(ages));
  await stream('/v1/extensions?limit=100', {
    signal,
    onState: (s) => {
      live.textContent = s === 'live' ? 'live' : 'reconnecting…';
      live.dataset.state = s;
    },
    onEvent: (ev) => {
      if (ev.event !== 'task') return;
      const t = JSON.parse(ev.data);
      byId.set(t.id, t);
      draw();
    },
  });
}
