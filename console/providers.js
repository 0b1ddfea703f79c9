// Providers: capabilities, prices, circuit breaker state and recent error rates
// (GET /v1/providers).

import { api } from './api.js';
import { h, replace } from './dom.js';

const pct = (w) => (w && w.error_rate !== null && w.error_rate !== undefined
  ? `${(w.error_rate * 100).toFixed(1)} % of ${w.requests}` : 'no requests');

export async function render(main, _params, signal) {
  const body = h('tbody', { id: 'provider-rows' });
  main.append(
    h('div', { class: 'bar' }, h('h2', {}, 'Providers'),
      h('button', { type: 'button', onclick: () => load() }, 'Refresh')),
    h('div', { class: 'scroll' }, h('table', {},
      h('thead', {}, h('tr', {}, ['Provider', 'Sources', 'Outputs', 'Length', 'Updates',
        'Price per output', 'Circuit', 'Errors 5 min', 'Errors 60 min'].map((c) =>
        h('th', { scope: 'col' }, c)))), body)),
    h('p', { class: 'hint' }, 'Error rates are the upstream results this gateway replica saw.'));
  async function load() {
    const r = await api('/v1/providers', { signal });
    replace(body, r.data.map((p) => {
      const c = p.capabilities || {};
      const br = p.circuit || {};
      return h('tr', { dataset: { provider: p.name } },
        h('th', { scope: 'row' }, p.name),
        h('td', {}, (c.sources || []).join(', ')),
        h('td', {}, c.max_outputs),
        h('td', {}, c.length ? 'yes' : 'no'),
        h('td', {}, [c.webhooks ? 'webhooks' : '', c.polling ? 'polling' : ''].filter(Boolean).join(', ')),
        h('td', {}, `${p.price_per_output} credits`),
        h('td', {}, h('span', { class: `badge c-${br.state || 'none'}` }, br.state || '–'),
          br.open_until ? ` until ${new Date(br.open_until).toLocaleTimeString()}` : ''),
        h('td', {}, pct(p.recent && p.recent.last_5m)),
        h('td', {}, pct(p.recent && p.recent.last_60m)));
    }));
  }
  await load();
}
