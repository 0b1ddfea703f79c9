// One task, live: the source's waveform with extend_after marked and each output's waveform on
// the same time axis (the kept part and the new part line up), players (source, each output,
// A/B around the splice), title, lyrics highlighted as the audio plays, cover, the event
// timeline, the attempts per provider and the credits held, captured and refunded; each ready
// output links to a new extension of it.

import { api, apiBlob, ApiError, audioBlob, audioSource, filePath, stream } from './api.js';
import { h, replace, credits, statusBadge, toast, problemText } from './dom.js';
import { decode, formatTime, Waveform } from './waveform.js';

const FINAL = new Set(['succeeded', 'partially_succeeded', 'failed', 'canceled']);
const FINAL_EVENTS = new Set(['extension.succeeded', 'extension.partially_succeeded',
  'extension.failed', 'extension.canceled']);
const PRE_ROLL = 4;  // seconds before the splice that A/B starts from

export async function render(main, [id], signal) {
  const urls = [];  // object URLs to revoke when the page goes
  signal.addEventListener('abort', () => urls.forEach((u) => URL.revokeObjectURL(u)));
  const tracks = new Map();  // key -> {audio, wave, data, el}
  let doc = null;
  let axis = 0;
  let sawFinalEvent = false;

  const status = h('span', { id: 'task-status' });
  const live = h('span', { class: 'live', id: 'live-state' }, 'connecting…');
  const meta = h('dl', { class: 'meta' });
  const creditsEl = h('p', { id: 'task-credits' });
  const cancel = h('button', { type: 'button', id: 'cancel', hidden: true }, 'Cancel');
  const sourceBox = h('section', { class: 'card', id: 'source', 'aria-label': 'Source' });
  const outputsBox = h('div', { id: 'outputs' });
  const timeline = h('ol', { class: 'timeline', id: 'timeline' });
  const attempts = h('tbody', { id: 'attempts' });
  const error = h('p', { class: 'error', role: 'alert', id: 'task-error' });

  main.append(
    h('div', { class: 'bar' }, h('h2', {}, 'Task ', h('code', {}, id)), status, live, cancel),
    error, meta,
    h('section', { class: 'card' }, h('h3', {}, 'Credits'), creditsEl),
    sourceBox, outputsBox,
    h('section', { class: 'card' }, h('h3', {}, 'Attempts'),
      h('div', { class: 'scroll' }, h('table', {},
        h('thead', {}, h('tr', {}, ['#', 'Provider', 'Provider task', 'Status', 'Error',
          'Started', 'Finished'].map((c) => h('th', { scope: 'col' }, c)))), attempts))),
    h('section', { class: 'card' }, h('h3', {}, 'Events'), timeline),
    h('p', {}, h('a', { href: `#/deliveries?task=${id}` }, 'Webhook deliveries of this task')));

  cancel.addEventListener('click', async () => {
    try {
      await api(`/v1/extensions/${id}/cancel`, { method: 'POST', signal });
      toast('Cancel requested');
    } catch (e) {
      toast(problemText(e), 'error');
    }
  });

  // Audio: decoded for the waveform; played from a signed link or a Blob of the API file.
  // A loaded track's player takes a renewed signed link while paused, at the same place; a
  // playing one keeps its own (swapping would interrupt it) until the next read.
  function takeLink(t, signed) {
    if (!t || !t.src || !t.src.signed || !signed || signed === t.src.signed || !t.audio.paused) return;
    const at = t.audio.currentTime;
    t.src = { signed };
    t.audio.src = signed;
    t.audio.currentTime = at;
  }

  async function loadTrack(key, src) {
    if (tracks.has(key)) return tracks.get(key);
    const t = { audio: h('audio', { preload: 'auto', controls: true, dataset: { track: key } }),
      data: null, src };
    tracks.set(key, t);
    let fetched;
    try {
      fetched = await audioBlob(src, signal);
    } catch (e) {
      tracks.delete(key);  // tried again at the next update, unless it is gone for good
      throw e;
    }
    if (t.src.signed) {
      t.audio.src = t.src.signed;  // renewed meanwhile (takeLink), or as loaded
    } else {
      const u = URL.createObjectURL(fetched);
      urls.push(u);
      t.audio.src = u;
    }
    t.data = await decode(await fetched.arrayBuffer());
    return t;
  }

  // Why a track's audio could not be shown, in the place of its waveform.
  const expiredText = (at) =>
    `The file expired and was deleted on ${new Date(at).toLocaleString()} (retention): no audio to show.`;

  function audioFailure(e) {
    if (e instanceof ApiError && e.status === 410)
      return 'The file expired and was deleted (retention): no audio to show.';
    return `The audio could not be loaded (${problemText(e)}); it is tried again at the next update.`;
  }

  // "Download WAV" / "Download MP3": the signed link as an attachment (no key needed), or
  // the file fetched with the key and saved from memory when links are not signed.
  function downloads(o) {
    const a = o.audio || {};
    const links = [];
    for (const fmt of ['wav', 'mp3']) {
      const signed = filePath(a[`${fmt}_signed_url`]);
      const plain = filePath(a[`${fmt}_url`]);
      const name = `${id}-${o.index}.${fmt}`;
      const label = `Download ${fmt.toUpperCase()}`;
      if (signed) {
        links.push(h('a', { class: 'button', href: `${signed}&download=1`, download: name,
          id: `download-${fmt}-${o.index}` }, label));
      } else if (plain) {
        links.push(h('button', { type: 'button', id: `download-${fmt}-${o.index}`,
          onclick: async () => {
            try {
              const u = URL.createObjectURL(await apiBlob(plain, signal));
              const link = h('a', { href: u, download: name });
              document.body.append(link);
              link.click();
              link.remove();
              setTimeout(() => URL.revokeObjectURL(u), 60000);
            } catch (e) {
              if (!signal.aborted) toast(problemText(e), 'error');
            }
          } }, label));
      }
    }
    return links;
  }

  // "Extend this output": the New extension page with this output as its source (a clip
  // `<task id>-<index>` of the provider that made it).
  function extendLink(o) {
    const q = new URLSearchParams({ clip: `${id}-${o.index}`, provider: doc.provider || '' });
    return h('a', { class: 'button', href: `#/new?${q}`, id: `extend-${o.index}`,
      'aria-label': `Extend this output (output ${o.index})` }, 'Extend this output');
  }

  function relayout() {
    axis = Math.max(0, ...[...tracks.values()].filter((t) => t.data).map((t) => t.data.duration));
    for (const t of tracks.values()) if (t.wave && t.data) t.wave.set({ axis, audio: t.data });
  }

  function attachPlayhead(t, lyricsList) {
    let frame = 0;
    const tick = () => {
      t.wave.setPlayhead(t.audio.currentTime);
      if (lyricsList) highlight(lyricsList, t.audio.currentTime * 1000);
      if (!t.audio.paused) frame = requestAnimationFrame(tick);
    };
    t.audio.addEventListener('play', () => { cancelAnimationFrame(frame); tick(); });
    t.audio.addEventListener('seeked', tick);
    t.audio.addEventListener('timeupdate', tick);
    signal.addEventListener('abort', () => { cancelAnimationFrame(frame); t.audio.pause(); });
  }

  function playButton(t, label) {
    return h('button', { type: 'button', class: 'play', onclick: () => {
      for (const o of tracks.values()) if (o !== t) o.audio.pause();
      if (t.audio.paused) t.audio.play().catch((e) => toast(`cannot play: ${e.message}`, 'error'));
      else t.audio.pause();
    } }, label);
  }

  // A URL source that is a file of this gateway (an output's link, as the gateway makes of an
  // extended output): its path here, fetched with the key (a signature in the URL may have
  // expired); '' for one elsewhere.
  function ownFile(url) {
    try {
      const u = new URL(url);
      return u.origin === location.origin && filePath(url) ? u.pathname : '';
    } catch {
      return '';
    }
  }

  async function showSource(d) {
    const src = d.request && d.request.source;
    if (src && tracks.has('source')) return takeLink(tracks.get('source'), filePath(src.signed_url));
    if (!src) return;
    const own = src.type === 'url' ? ownFile(src.url) : '';
    if ((src.type !== 'file' || !src.file_id) && !own) {
      // Only uploads and this gateway's links are its files; other URLs and clips are elsewhere.
      replace(sourceBox, h('h3', {}, 'Source'), h('p', { class: 'hint' },
        src.type === 'url' ? ['Fetched from ', h('a', { href: src.url, rel: 'noreferrer' }, src.url),
          ': no waveform (the console only reads this gateway\'s files).']
          : `A ${src.provider || 'provider'} clip (${src.id || ''}): no waveform.`));
      return;
    }
    const splice = d.request.extend_after;
    const name = src.filename || (own ? 'a file of this gateway, by its link' : '');
    if (src.expired_at) {
      replace(sourceBox, h('h3', {}, 'Source ', h('small', {}, name),
        ` · extend after ${formatTime(splice)}`), h('p', { class: 'hint' }, expiredText(src.expired_at)));
      return;
    }
    replace(sourceBox, h('h3', {}, 'Source ', h('small', {}, name),
      ` · extend after ${formatTime(splice)}`), h('p', { class: 'hint' }, 'loading audio…'));
    const signed = filePath(src.signed_url);
    let t;
    try {
      t = await loadTrack('source', own ? { path: own } : signed ? { signed }
        : { path: `/v1/files/${encodeURIComponent(src.file_id)}` });
    } catch (e) {
      if (signal.aborted) return;
      replace(sourceBox, h('h3', {}, 'Source ', h('small', {}, name),
        ` · extend after ${formatTime(splice)}`), h('p', { class: 'error' }, audioFailure(e)));
      return;
    }
    const canvas = h('canvas', { class: 'wave', id: 'wave-source' });
    t.wave = new Waveform(canvas, { label: `Source waveform, extend after ${formatTime(splice)}: ` +
      'click or use the arrow keys to seek', seekable: true,
      onSeek: (s) => { t.audio.currentTime = s; } });
    t.wave.set({ splice });
    attachPlayhead(t, null);
    replace(sourceBox,
      h('h3', {}, 'Source ', h('small', {}, name),
        ` · ${formatTime(t.data.duration)} · extend after ${formatTime(splice)}`),
      canvas, h('div', { class: 'controls' }, playButton(t, 'Play source'), t.audio));
    relayout();
  }

  // What the gateway's own check of the output found (outputs.verify): its decoded length,
  // format and level, the level jump at the splice, and any flag, said plainly.
  function verificationLine(o) {
    const v = o.verification;
    if (!v || typeof v !== 'object') return null;
    const parts = [];
    if (Number.isFinite(v.duration)) parts.push(formatTime(v.duration));
    if (v.format) parts.push(String(v.format).toUpperCase());
    if (v.sample_rate) parts.push(`${(v.sample_rate / 1000).toFixed(1)} kHz`);
    if (v.channels) parts.push(v.channels === 1 ? 'mono' : v.channels === 2 ? 'stereo' : `${v.channels} channels`);
    if (Number.isFinite(v.loudness_lufs)) parts.push(`${v.loudness_lufs.toFixed(1)} LUFS`);
    if (Number.isFinite(v.peak_dbfs)) parts.push(`peak ${v.peak_dbfs.toFixed(1)} dBFS`);
    if (v.splice && Number.isFinite(v.splice.level_jump_db))
      parts.push(`${v.splice.level_jump_db.toFixed(1)} dB jump at the splice`);
    const flags = Array.isArray(v.flags) ? v.flags : [];
    return h('p', { class: flags.length ? 'verify flagged' : 'verify hint', id: `verify-${o.index}` },
      `Checked: ${parts.join(' · ')}`,
      flags.length ? ` · flagged: ${flags.map((f) => String(f).replace(/_/g, ' ')).join(', ')}` : '');
  }

  function outputBox(o) {
    let box = outputsBox.querySelector(`[data-output="${o.index}"]`);
    if (!box) {
      box = h('section', { class: 'card output', dataset: { output: o.index },
        'aria-label': `Output ${o.index}` });
      outputsBox.append(box);
    }
    return box;
  }

  async function showOutput(o) {
    const box = outputBox(o);
    box.dataset.status = o.status;
    const key = `output-${o.index}`;
    const src = audioSource(o.audio);
    if (o.status !== 'ready' || !src) {
      const remote = o.audio && (o.audio.mp3_url || o.audio.wav_url);
      replace(box, h('h3', {}, `Output ${o.index} `, statusBadge(o.status)),
        o.title ? h('p', { class: 'title' }, o.title) : null,
        o.error ? h('p', { class: 'error' }, typeof o.error === 'string' ? o.error
          : (o.error.message || o.error.code || 'failed')) : null,
        o.status === 'ready' && remote ? h('p', { class: 'hint' }, 'Audio at the provider: ',
          h('a', { href: remote, rel: 'noreferrer' }, remote), ' (no waveform: not a file of this gateway)') : null,
        o.status === 'ready' ? verificationLine(o) : null,
        o.status === 'ready' ? h('p', { class: 'downloads' }, extendLink(o)) : null);
      return;
    }
    if (tracks.has(key)) return updateOutputText(box, o);
    const expired = o.audio && (o.audio.wav_expired_at || o.audio.mp3_expired_at);
    if (expired) {
      replace(box, h('h3', {}, `Output ${o.index} `, statusBadge(o.status)),
        o.title ? h('p', { class: 'title' }, o.title) : null,
        h('p', { class: 'hint' }, expiredText(expired)));
      return;
    }
    replace(box, h('h3', {}, `Output ${o.index} `, statusBadge(o.status)),
      h('p', { class: 'hint' }, 'loading audio…'));
    let t;
    try {
      t = await loadTrack(key, src);
    } catch (e) {
      if (signal.aborted) return;
      // Expired audio cannot be extended either (the gateway refuses it): no link then.
      const gone = e instanceof ApiError && e.status === 410;
      replace(box, h('h3', {}, `Output ${o.index} `, statusBadge(o.status)),
        o.title ? h('p', { class: 'title' }, o.title) : null,
        h('p', { class: 'error' }, audioFailure(e)),
        gone ? null : h('p', { class: 'downloads' }, extendLink(o)));
      return;
    }
    const splice = doc.request.extend_after;
    const canvas = h('canvas', { class: 'wave', id: `wave-output-${o.index}` });
    t.wave = new Waveform(canvas, { label: `Output ${o.index} waveform: click or use the ` +
      'arrow keys to seek', seekable: true, onSeek: (s) => { t.audio.currentTime = s; } });
    t.wave.set({ splice });
    const lyricsList = h('ol', { class: 'lyrics', id: `lyrics-${o.index}` });
    attachPlayhead(t, lyricsList);
    const ab = h('button', { type: 'button', class: 'ab', id: `ab-${o.index}` }, 'A/B at splice');
    ab.addEventListener('click', () => abToggle(t, ab));
    replace(box,
      h('div', { class: 'output-head' },
        h('img', { class: 'cover', alt: '', id: `cover-${o.index}`, hidden: true }),
        h('div', {}, h('h3', {}, `Output ${o.index} `, statusBadge(o.status)),
          h('p', { class: 'title', id: `title-${o.index}` }),
          h('p', { class: 'hint' }, `${formatTime(t.data.duration)} · kept until ` +
            `${formatTime(splice)}, new after it`))),
      canvas,
      h('div', { class: 'controls' }, playButton(t, `Play output ${o.index}`), ab, t.audio),
      verificationLine(o),
      h('p', { class: 'downloads' }),
      lyricsList);
    // The task may have been read again while the audio loaded: its links are the newer ones.
    updateOutputText(box, (doc.outputs || []).find((x) => x.index === o.index) || o);
    relayout();
  }

  // A/B around the splice: plays the source from a little before extend_after, and each press
  // switches between the source (A) and this output (B) at the same moment.
  function abToggle(out, button) {
    const src = tracks.get('source');
    if (!src || !src.data) return toast('the source is not loaded', 'error');
    const playing = [src, out].find((t) => !t.audio.paused);
    for (const t of tracks.values()) if (t !== src && t !== out) t.audio.pause();
    let next;
    let at;
    if (!playing) {
      next = src;
      at = Math.max(0, doc.request.extend_after - PRE_ROLL);
    } else {
      next = playing === src ? out : src;
      at = playing.audio.currentTime;
      playing.audio.pause();
    }
    next.audio.currentTime = Math.min(at, next.data.duration);
    next.audio.play().catch((e) => toast(`cannot play: ${e.message}`, 'error'));
    button.textContent = next === src ? 'A/B: playing A (source), press for B' :
      'A/B: playing B (output), press for A';
  }

  // A loaded output's signed links, renewed at each read of the task: the download buttons
  // take the new ones, its player too (takeLink).
  function renewLinks(box, o) {
    const dl = box.querySelector('p.downloads');
    if (dl) replace(dl, downloads(o), extendLink(o));
    const fresh = audioSource(o.audio);
    takeLink(tracks.get(`output-${o.index}`), fresh && fresh.signed);
  }

  async function updateOutputText(box, o) {
    renewLinks(box, o);
    const title = box.querySelector('.title');
    if (title) title.textContent = o.title || '';
    const list = box.querySelector('.lyrics');
    if (list && Array.isArray(o.lyrics_timestamped) && !list.childElementCount) {
      replace(list, o.lyrics_timestamped.map((l) => h('li', {
        dataset: { start: l.start_ms, end: l.end_ms } },
      h('span', { class: 'ts' }, formatTime(l.start_ms / 1000)), ' ', l.text)));
    } else if (list && !list.childElementCount && o.lyrics) {
      replace(list, o.lyrics.split('\n').map((l) => h('li', {}, l)));
    }
    const img = box.querySelector('img.cover');
    const cover = filePath(o.cover_url);
    const coverSigned = filePath(o.cover_signed_url);
    if (img && coverSigned && !img.dataset.src) {
      // A signed link needs no key: the image loads it itself.
      img.dataset.src = coverSigned;
      img.src = coverSigned;
      img.alt = `Cover of output ${o.index}`;
      img.hidden = false;
    } else if (img && cover && !img.dataset.src) {
      img.dataset.src = cover;
      try {
        const u = URL.createObjectURL(await apiBlob(cover, signal));
        urls.push(u);
        img.src = u;
        img.alt = `Cover of output ${o.index}`;
        img.hidden = false;
      } catch (e) {
        if (!signal.aborted) img.dataset.src = '';
      }
    }
  }

  function showDoc(d) {
    doc = d;
    replace(status, statusBadge(d.status));
    status.dataset.status = d.status;
    cancel.hidden = FINAL.has(d.status);
    replace(meta,
      h('dt', {}, 'Provider'), h('dd', {}, d.provider || '–'),
      h('dt', {}, 'Created'), h('dd', {}, new Date(d.created_at).toLocaleString()),
      h('dt', {}, 'Updated'), h('dd', {}, new Date(d.updated_at).toLocaleString()),
      h('dt', {}, 'Extend after'), h('dd', {}, formatTime(d.request.extend_after)),
      d.request.prompt ? [h('dt', {}, 'Prompt'), h('dd', {}, d.request.prompt)] : null,
      (d.warnings || []).length ? [h('dt', {}, 'Warnings'), h('dd', {}, d.warnings.join('; '))] : null);
    error.textContent = d.error ? `${d.error.code || 'error'}: ${d.error.message || ''}` : '';
    creditsEl.textContent = d.credits
      ? `${credits(d.credits)} · ${d.credits.outstanding} still held` : '–';
    replace(attempts, (d.attempts || []).map((a) => h('tr', {},
      h('td', {}, a.number), h('td', {}, a.provider), h('td', {}, h('code', {}, a.provider_task_id || '–')),
      h('td', {}, a.status), h('td', {}, a.error ? `${a.error.code || ''} ${a.error.message || ''}` : ''),
      h('td', {}, new Date(a.started_at).toLocaleTimeString()),
      h('td', {}, a.finished_at ? new Date(a.finished_at).toLocaleTimeString() : '–'))));
    const work = [showSource(d), ...(d.outputs || []).map(showOutput)];
    Promise.all(work).catch((e) => { if (!signal.aborted) toast(problemText(e), 'error'); });
  }

  let refreshing = null;
  let again = false;
  async function refresh() {
    if (refreshing) { again = true; return refreshing; }
    refreshing = (async () => {
      do {
        again = false;
        showDoc(await api(`/v1/extensions/${id}`, { signal }));
        renewBeforeLinksEnd(doc);
      } while (again);
    })().finally(() => { refreshing = null; });
    return refreshing;
  }

  // Signed links end (api.signed_url_lifetime); a tab left open on a task reads it again a
  // minute before the first of its links does (the gateway hands out new ones), so its
  // download buttons and players keep working.
  let renewTimer = null;
  signal.addEventListener('abort', () => clearTimeout(renewTimer));
  function renewBeforeLinksEnd(d) {
    clearTimeout(renewTimer);
    let first = Infinity;
    const walk = (v) => {
      if (!v || typeof v !== 'object') return;
      for (const [k, x] of Object.entries(v)) {
        if (k.endsWith('signed_url_expires_at') && typeof x === 'string') first = Math.min(first, Date.parse(x));
        else walk(x);
      }
    };
    walk(d);
    if (!Number.isFinite(first) || signal.aborted) return;
    const wait = Math.min(Math.max(first - Date.now() - 60000, 5000), 2 ** 31 - 1);
    renewTimer = setTimeout(() => {
      refresh().catch((err) => { if (!signal.aborted) toast(problemText(err), 'error'); });
    }, wait);
  }

  function describe(e) {
    const d = e.data || {};
    const parts = [];
    if (d.index) parts.push(`output ${d.index}`);
    if (d.provider) parts.push(d.provider);
    if (d.failed_provider) parts.push(`${d.failed_provider} failed`);
    if (d.decision) parts.push(d.decision);
    if (d.next_provider) parts.push(`next: ${d.next_provider}`);
    if (d.reason) parts.push(`reason: ${d.reason}`);
    if (d.error) parts.push(`${d.error.code || ''} ${d.error.message || ''}`.trim());
    if (d.amount !== undefined) parts.push(`${d.amount} credits`);
    return parts.join(' · ');
  }

  await refresh();
  await stream(`/v1/extensions/${id}/events`, {
    signal,
    done: () => sawFinalEvent || (doc && FINAL.has(doc.status)),
    onState: (s) => { live.textContent = s === 'live' ? 'live' : 'reconnecting…'; },
    onEvent: (ev) => {
      const e = JSON.parse(ev.data);
      if (FINAL_EVENTS.has(e.type)) sawFinalEvent = true;
      // Credits moved (an output captured its share, a refund, the end): the header's balance.
      if (FINAL_EVENTS.has(e.type) || e.type === 'extension.output.ready' ||
          e.type === 'extension.credits.refunded')
        window.dispatchEvent(new Event('segue:credits'));
      timeline.append(h('li', { dataset: { type: e.type, seq: e.seq } },
        h('time', { datetime: e.created_at }, new Date(e.created_at).toLocaleTimeString()), ' ',
        h('strong', {}, e.type.replace(/^extension\./, '')), ' ', describe(e)));
      refresh().catch((err) => { if (!signal.aborted) toast(problemText(err), 'error'); });
    },
  });
  if (!signal.aborted) {
    live.textContent = 'final';
    await refresh();
  }
}

function highlight(list, ms) {
  for (const li of list.children) {
    const on = li.dataset.start !== undefined && ms >= Number(li.dataset.start) &&
      ms < Number(li.dataset.end);
    if (on !== li.classList.contains('now')) {
      li.classList.toggle('now', on);
      if (on) li.setAttribute('aria-current', 'true');
      else li.removeAttribute('aria-current');
    }
  }
}
