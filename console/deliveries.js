// Deliveries: the tenant's pending, dead and latest delivered webhook deliveries with their
// last error; redeliver one, or every dead one of a task.

import { api } from './api.js';
import { h, replace, toast, problemText } from './dom.js';

export async function render(main, [taskParam], signal) {
  const task = h('input', { id: 'delivery-task', type: 'search', placeholder: 'ext_…',
    value: taskParam || '' });
  const pending = h('tbody', { id: 'pending-rows' });
  const dead = h('tbody', { id: 'dead-rows' });
  const delivered = h('tbody', { id: 'delivered-rows' });
  const all = h('button', { type: 'button', id: 'redeliver-all', hidden: true },
    'Redeliver every dead delivery of this task');
  const counts = h('p', { class: 'hint', id: 'delivery-counts' });
  const head = (...cols) => h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c))));

  main.append(
    h('div', { class: 'bar' }, h('h2', {}, 'Deliveries'),
      h('button', { type: 'button', id: 'refresh-deliveries', onclick: () => reload() }, 'Refresh')),
    h('form', { class: 'filters', role: 'search', onsubmit: (e) => { e.preventDefault(); reload(); } },
      h('label', {}, 'Task id ', task), h('button', { type: 'submit' }, 'Filter'), all),
    counts,
    h('section', { class: 'card' }, h('h3', {}, 'Dead'),
      h('div', { class: 'scroll' }, h('table', {},
        head('Delivery', 'Task', 'Event', 'URL', 'Attempts', 'Last error', ''), dead))),
    h('section', { class: 'card' }, h('h3', {}, 'Pending'),
      h('div', { class: 'scroll' }, h('table', {},
        head('Delivery', 'Task', 'Event', 'URL', 'Attempts', 'Last error', 'Next attempt'), pending))),
    h('section', { class: 'card' }, h('h3', {}, 'Delivered (latest 20)'),
      h('div', { class: 'scroll' }, h('table', {},
        head('Delivery', 'Task', 'Event', 'URL', 'Attempts', 'Delivered', ''), delivered))));

  const queued = (ok) => {
    if (ok) toast(`${ok} deliver${ok === 1 ? 'y' : 'ies'} queued again`);
  };

  async function redeliver(ids) {
    let ok = 0;
    for (const id of ids) {
      try {
        await api(`/v1/deliveries/${encodeURIComponent(id)}/redeliver`, { method: 'POST', signal });
        ok++;
      } catch (e) {
        toast(`${id}: ${problemText(e)}`, 'error');
      }
    }
    queued(ok);
    await reload();
  }

  // Every dead delivery of a task in one request, so that they go out in sequence order (one
  // by one, each would go in the order it was redelivered, and the list is newest first).
  async function redeliverTask(taskId) {
    try {
      const r = await api('/v1/deliveries/redeliver', { method: 'POST', signal,
        body: { task_id: taskId, status: 'dead' } });
      queued(r.data.length);
    } catch (e) {
      toast(problemText(e), 'error');
    }
    await reload();
  }

  // The status, then the error unless it says the status already ("HTTP 503 (retries
  // exhausted)"); after a redelivery (no attempt yet) it is the earlier schedule's.
  const lastError = (d) => {
    const status = d.last_status ? `HTTP ${d.last_status}` : '';
    const err = d.last_error || '';
    const text = err && err.startsWith(status) ? err : [status, err].filter(Boolean).join(' · ');
    return text && d.attempts === 0 ? `before the redelivery: ${text}` : text;
  };

  // A load the user asked for: one that fails (a task id that is none of the tenant's) says
  // why and shows no rows, rather than leaving the last filter's rows under the new one.
  async function reload() {
    try {
      await load();
    } catch (e) {
      if (signal.aborted) return;
      for (const body of [pending, dead, delivered]) replace(body, []);
      all.hidden = true;
      counts.textContent = problemText(e);
      toast(problemText(e), 'error');
    }
  }

  // Loads can overlap (a refresh while a redelivery reloads): only the latest one is shown,
  // and "redeliver all" waits for it.
  let loads = 0;
  async function load() {
    const mine = ++loads;
    all.disabled = true;
    const t = task.value.trim();
    const q = t ? `&task_id=${encodeURIComponent(t)}` : '';
    const [p, x, y] = await Promise.all([
      api(`/v1/deliveries?status=pending&limit=200${q}`, { signal }),
      api(`/v1/deliveries?status=dead&limit=200${q}`, { signal }),
      api(`/v1/deliveries?status=delivered&limit=20${q}`, { signal }),
    ]);
    if (mine !== loads) return;
    all.disabled = false;
    const row = (d, last) => h('tr', { dataset: { id: d.id, status: d.status } },
      h('td', {}, h('code', {}, d.id)),
      h('td', {}, h('a', { href: `#/tasks/${d.task_id}` }, d.task_id)),
      h('td', {}, `#${d.seq}`),
      h('td', { class: 'url' }, d.url),
      h('td', {}, d.attempts),
      h('td', {}, lastError(d)),
      last);
    replace(dead, x.data.map((d) => row(d, h('td', {}, h('button', { type: 'button',
      class: 'redeliver', onclick: () => redeliver([d.id]) }, 'Redeliver')))));
    // A task's deliveries to one URL go out in order: one behind an earlier pending one is
    // tried after it, whatever its own due time says.
    const heads = new Map();
    for (const d of p.data) {
      const k = `${d.task_id} ${d.url}`;
      if (!heads.has(k) || d.seq < heads.get(k).seq) heads.set(k, d);
    }
    const nextAttempt = (d) => {
      const first = heads.get(`${d.task_id} ${d.url}`);
      if (first.seq < d.seq) return `after #${first.seq}`;
      return d.next_attempt_at ? new Date(d.next_attempt_at).toLocaleTimeString() : '–';
    };
    replace(pending, p.data.map((d) => row(d, h('td', {}, nextAttempt(d)))));
    replace(delivered, y.data.map((d) => h('tr', { dataset: { id: d.id, status: d.status } },
      h('td', {}, h('code', {}, d.id)),
      h('td', {}, h('a', { href: `#/tasks/${d.task_id}` }, d.task_id)),
      h('td', {}, `#${d.seq}`),
      h('td', { class: 'url' }, d.url),
      h('td', {}, d.attempts),
      h('td', {}, d.delivered_at ? new Date(d.delivered_at).toLocaleTimeString() : '–'),
      h('td', {}, h('button', { type: 'button', class: 'redeliver',
        onclick: () => redeliver([d.id]) }, 'Redeliver')))));
    counts.textContent = `${x.data.length}${x.has_more ? '+' : ''} dead · ` +
      `${p.data.length}${p.has_more ? '+' : ''} pending`;
    all.hidden = !(t && x.data.length);
    all.onclick = () => redeliverTask(t);
    // The address says the filter (a reload keeps it), and stops saying it once cleared.
    history.replaceState(null, '', t ? `#/deliveries?task=${t}` : '#/deliveries');
  }
  await load();
}
