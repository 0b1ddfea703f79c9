// New extension. The song to extend is an upload (drop or choose a file, see its waveform,
// click it or use the arrow keys to choose extend_after; the upload shows its progress and can be
// canceled while it goes), an audio URL the gateway fetches (extend_after typed in: the console
// reads no other site's audio, so it has no waveform of it), or an output of one of the tenant's
// tasks (#/new?clip=<task id>-<n>&provider=…, a task page's "Extend this output": a clip the
// gateway resolves; its waveform when its audio loads with the key). Fill in the prompt, lyrics
// and options, submit, and land on the live task page.

import { api, ApiError, audioBlob, audioSource, upload } from './api.js';
import { h, bytes, toast, problemText } from './dom.js';
import { decode, formatTime, Waveform } from './waveform.js';

const SOURCES = [['upload', 'Upload a file'], ['url', 'Audio URL']];
const NUMBERS = new Set(['num_outputs', 'length']);  // sent as numbers in a JSON body
const OUTPUT_ID = /^(ext_[A-Za-z0-9_-]+)-([1-9][0-9]*)$/;

// The output that `?clip=<task id>-<n>&provider=…` names, or null.
function clipOf(query) {
  const q = new URLSearchParams(query || '');
  const m = (q.get('clip') || '').match(OUTPUT_ID);
  return m ? { id: m[0], task: m[1], index: Number(m[2]), provider: q.get('provider') || '' } : null;
}

// An http or https URL, as audio_url takes.
function httpUrl(text) {
  try {
    return ['http:', 'https:'].includes(new URL(text).protocol);
  } catch {
    return false;
  }
}

export async function render(main, [query], signal) {
  const clip = clipOf(query);
  const sources = clip ? [...SOURCES, ['clip', `Output ${clip.index} of task ${clip.task}`]] : SOURCES;
  let mode = clip ? 'clip' : 'upload';  // the source chosen: a key of `sources`
  let file = null;
  const songs = {};  // per source, its song decoded for the waveform: {name, audio}
  const notes = {};  // per source, what to say while it has none (decoding, a failure)
  let busy = false;  // a submit is under way
  const choice = h('fieldset', { class: 'sources', id: 'source-kind' },
    h('legend', {}, 'Source'),
    sources.map(([value, label]) => h('label', {},
      h('input', { type: 'radio', name: 'source', value, id: `source-${value}`,
        checked: value === mode }), ` ${label}`)));
  const fileInput = h('input', { id: 'audio-file', name: 'audio_file', type: 'file',
    accept: 'audio/*' });
  const drop = h('div', { class: 'drop', id: 'drop' },
    h('p', {}, 'Drop a song here, or '), h('label', { class: 'button' }, 'choose a file', fileInput));
  const audioUrl = h('input', { id: 'audio-url', name: 'audio_url', type: 'url',
    placeholder: 'https://…/song.mp3', maxlength: '2048', autocomplete: 'off', spellcheck: 'false' });
  const canvas = h('canvas', { class: 'wave', id: 'wave-new', hidden: true });
  const info = h('p', { class: 'hint', id: 'file-info', hidden: true });
  const wave = new Waveform(canvas, { label: 'Choose where to extend: click or use the arrow keys',
    interactive: true, onSeek: (t) => setSplice(t) });
  const after = h('input', { id: 'extend-after', name: 'extend_after', type: 'number', min: '0',
    step: '0.01', required: true, 'aria-describedby': 'extend-after-hint' });
  const afterHint = h('small', { id: 'extend-after-hint' });
  const prompt = h('textarea', { id: 'prompt', name: 'prompt', maxlength: '3000', rows: '2' });
  const lyrics = h('textarea', { id: 'lyrics', name: 'lyrics', maxlength: '2000', rows: '3' });
  const lyricsNew = h('textarea', { id: 'lyrics-new', name: 'lyrics_section_to_extend',
    maxlength: '3000', rows: '3' });
  const gender = h('select', { id: 'gender', name: 'gender' }, h('option', { value: '' }, 'any'),
    ['female', 'male', 'neutral'].map((g) => h('option', { value: g }, g)));
  const outputs = h('select', { id: 'num-outputs', name: 'num_outputs' },
    h('option', { value: '2' }, '2'), h('option', { value: '1' }, '1'));
  const length = h('input', { id: 'length', name: 'length', type: 'number', min: '1', step: '1' });
  const provider = h('select', { id: 'provider', name: 'provider' },
    h('option', { value: '' }, 'routed by the gateway'));
  const webhook = h('input', { id: 'webhook-url', name: 'webhook_url', type: 'url',
    placeholder: 'https://…' });
  const options = [prompt, lyrics, lyricsNew, gender, outputs, length, provider, webhook];
  const submit = h('button', { type: 'submit', id: 'submit', disabled: true }, 'Extend');
  const errors = h('div', { class: 'error', role: 'alert', id: 'form-errors' });
  // The upload's progress: a native progress bar (a progressbar to assistive technology, its
  // value text the same words as shown), and a Cancel that aborts the request while bytes are
  // still going out. Once they are all sent the gateway is deciding: too late to take it back.
  const progress = h('progress', { id: 'upload-progress', max: '1', value: '0' });
  const progressText = h('span', { id: 'upload-progress-text', class: 'hint' });
  const cancelUpload = h('button', { type: 'button', id: 'cancel-upload' }, 'Cancel upload');
  const uploading = h('div', { class: 'uploading', id: 'uploading', hidden: true },
    h('label', { for: 'upload-progress' }, 'Upload'), progress, progressText, cancelUpload);
  const uploadStatus = h('p', { class: 'hint', role: 'status', id: 'upload-status' });

  const field = (label, el, hint) => h('div', { class: 'field' },
    h('label', { for: el.id }, label), el, hint ? h('small', {}, hint) : null);
  const panels = {
    upload: h('div', { id: 'upload-panel' }, drop),
    url: h('div', { id: 'url-panel' }, field('Audio URL', audioUrl,
      'http or https: the gateway fetches it when the task runs'),
      h('p', { id: 'url-error', class: 'error', role: 'alert', hidden: true })),
  };
  // The output to continue: which one (a link to its task), and the clip that is sent, in
  // read-only fields (errors[] names them: clip.id, clip.provider).
  const clipTitle = h('span', { id: 'clip-title' });
  const clipId = h('input', { id: 'clip-id', name: 'clip.id', readonly: true, value: clip && clip.id,
    size: clip && clip.id.length + 2, spellcheck: 'false' });
  const clipProvider = h('input', { id: 'clip-provider', name: 'clip.provider', readonly: true,
    value: clip && clip.provider, spellcheck: 'false' });
  if (clip) {
    panels.clip = h('div', { id: 'clip-panel' },
      h('p', { id: 'clip-info' }, `Continues output ${clip.index} of task `,
        h('a', { href: `#/tasks/${clip.task}` }, h('code', {}, clip.task)), clipTitle),
      h('div', { class: 'row' }, field('Clip', clipId), field('Its provider', clipProvider)));
  }
  const form = h('form', { class: 'card', id: 'new-form', novalidate: true },
    h('h2', {}, 'New extension'), choice, Object.values(panels), canvas, info,
    h('div', { class: 'field' }, h('label', { for: after.id }, 'Extend after (seconds)'), after,
      afterHint),
    field('Prompt', prompt), field('Lyrics of the song', lyrics),
    field('Lyrics for the new part', lyricsNew),
    h('div', { class: 'row' }, field('Voice', gender), field('Outputs', outputs),
      field('New length (s)', length, 'optional'), field('Provider', provider)),
    field('Webhook URL', webhook, 'optional: the events are posted there, signed'),
    submit, uploading, uploadStatus, errors);
  main.append(form);

  api('/v1/providers', { signal }).then((r) => {
    for (const p of r.data) provider.append(h('option', { value: p.name }, p.name));
  }).catch(() => {});

  // Whether this source can be sent: an upload once it decoded, a URL once it is http(s), an
  // output always (the gateway says what is wrong with it).
  function ready() {
    if (busy) return false;
    if (mode === 'upload') return !!songs.upload;
    if (mode === 'url') return httpUrl(audioUrl.value.trim());
    return true;
  }
  function refresh() {
    submit.disabled = !ready();
    choice.disabled = busy;
  }

  // The song under the waveform: its name, length and splice, or what to say about it.
  function describe() {
    const s = songs[mode];
    info.textContent = s ? `${s.name} · ${formatTime(s.audio.duration)} · extend after ` +
      formatTime(Number(after.value)) : (notes[mode] || '');
    info.hidden = !info.textContent;
  }

  // The source on screen: its panel, and its waveform when it has one.
  function show(kind) {
    mode = kind;
    choice.querySelector(`#source-${kind}`).checked = true;
    for (const [k, panel] of Object.entries(panels)) panel.hidden = k !== kind;
    const s = songs[kind];
    canvas.hidden = !s;
    if (s) {
      const t = Math.min(Math.max(Number(after.value) || 0, 0), s.audio.duration);
      wave.set({ audio: s.audio, axis: s.audio.duration, splice: t });
    }
    afterHint.textContent = kind === 'url'
      ? 'Seconds into the song: type it in (the console has no waveform of a song elsewhere)'
      : s || kind === 'upload' ? 'Click the waveform to choose it'
        : 'Seconds into the song: type it in (no waveform of it here)';
    describe();
    refresh();
  }
  choice.addEventListener('change', (e) => show(e.target.value));
  // Why Extend stays off for a URL typed in: said under it, not left to guess.
  audioUrl.addEventListener('input', () => {
    const v = audioUrl.value.trim();
    const bad = v !== '' && !httpUrl(v);
    const note = panels.url.querySelector('#url-error');
    note.textContent = bad ? 'Only http:// and https:// URLs can be fetched.' : '';
    note.hidden = !bad;
    if (bad) audioUrl.setAttribute('aria-invalid', 'true');
    else audioUrl.removeAttribute('aria-invalid');
    refresh();
  });

  function setSplice(t) {
    after.value = t.toFixed(2);
    wave.set({ splice: t });
    describe();
  }
  after.addEventListener('input', () => {
    const t = Number(after.value);
    if (!songs[mode] || !Number.isFinite(t)) return;
    wave.set({ splice: Math.min(Math.max(t, 0), wave.audio.duration) });
    describe();
  });

  // A song to extend, decoded here for its waveform; the splice starts halfway.
  async function take(f) {
    if (!f || busy) return;
    file = f;
    delete songs.upload;
    notes.upload = `${f.name}: decoding…`;
    show('upload');
    try {
      songs.upload = { name: f.name, audio: await decode(await f.arrayBuffer()) };
      show('upload');
      setSplice(Math.round(songs.upload.audio.duration * 50) / 100);
      canvas.focus();
    } catch (e) {
      file = null;
      notes.upload = `${f.name}: this browser cannot decode it (${e.message})`;
      show('upload');
    }
  }
  fileInput.addEventListener('change', () => take(fileInput.files[0]));
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    take(e.dataTransfer.files[0]);
  });

  function showProgress(sent, total) {
    const pct = total ? Math.floor((sent / total) * 100) : 0;
    progress.max = total;
    progress.value = sent;
    progressText.textContent = `${bytes(sent)} of ${bytes(total)} · ${pct} %`;
    progress.setAttribute('aria-valuetext', progressText.textContent);
    if (total && sent >= total) {
      cancelUpload.disabled = true;
      uploadStatus.textContent = 'Uploaded: the gateway is checking the audio…';
    }
  }

  // The multipart upload, with its progress shown and a Cancel while it goes.
  async function sendFile(key) {
    const body = new FormData();
    body.append('audio_file', file, file.name);
    body.append('extend_after', after.value);
    for (const el of options) if (el.value.trim()) body.append(el.name, el.value.trim());
    const cancel = new AbortController();
    cancelUpload.disabled = false;
    cancelUpload.onclick = () => cancel.abort();
    uploadStatus.textContent = `Uploading ${file.name}…`;
    showProgress(0, file.size);
    uploading.hidden = false;
    try {
      return await upload('/v1/extensions', { body, signal: AbortSignal.any([signal, cancel.signal]),
        headers: { 'Idempotency-Key': key }, onProgress: showProgress });
    } finally {
      uploading.hidden = true;
    }
  }

  // A source the gateway reads itself, as JSON: the URL or the clip, and the same fields,
  // numbers as numbers.
  function sendJson(key) {
    const body = mode === 'url' ? { audio_url: audioUrl.value.trim() }
      : { clip: { provider: clipProvider.value, id: clip.id } };
    if (after.value !== '') body.extend_after = Number(after.value);
    for (const el of options) {
      const v = el.value.trim();
      if (v) body[el.name] = NUMBERS.has(el.name) ? Number(v) : v;
    }
    return api('/v1/extensions', { method: 'POST', body, signal,
      headers: { 'Idempotency-Key': key } });
  }

  // What went wrong, with each field the gateway named marked invalid ("clip.id" marks the
  // element named so, else the one named "clip").
  function showError(err) {
    if (err.name === 'AbortError') {
      uploadStatus.textContent = `Upload canceled at ${progressText.textContent}: nothing was created.`;
      return;
    }
    uploadStatus.textContent = '';
    errors.textContent = problemText(err);
    for (const fe of (err.problem && err.problem.errors) || []) {
      const named = (n) => form.querySelector(`[name="${CSS.escape(n)}"]`);
      const el = named(fe.field) || named(String(fe.field).split('.')[0]);
      if (el) el.setAttribute('aria-invalid', 'true');
    }
  }

  // One Idempotency-Key per request content: sending the same form again (after a Cancel that
  // came too late, a lost answer, an error) reuses it, so the gateway answers with the task it
  // may already have made instead of making a second; any change to the form takes a new one.
  let lastKey = null;
  let lastContent = null;
  function keyFor() {
    const content = JSON.stringify([mode, file && mode === 'upload'
      ? [file.name, file.size, file.lastModified] : null, audioUrl.value.trim(),
    clip && clip.id, clipProvider.value, after.value, options.map((el) => el.value.trim())]);
    if (content !== lastContent) {
      lastContent = content;
      lastKey = crypto.randomUUID();
    }
    return lastKey;
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    errors.textContent = '';
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
    if (!ready()) return;
    // Past the end of a song decoded here: said at once, before its upload (the gateway would
    // refuse it after). A little leeway: a browser's decoder may count a few ms fewer.
    const song = songs[mode];
    if (song && Number(after.value) > song.audio.duration + 0.05) {
      errors.textContent = `extend_after is beyond the end of the song ` +
        `(${song.audio.duration.toFixed(3)} s)`;
      after.setAttribute('aria-invalid', 'true');
      return;
    }
    const viaUpload = mode === 'upload';
    busy = true;
    refresh();
    submit.textContent = viaUpload ? 'Uploading…' : 'Sending…';
    try {
      const key = keyFor();
      const task = viaUpload ? await sendFile(key) : await sendJson(key);
      toast(`Task ${task.id} created`);
      location.hash = `#/tasks/${task.id}`;
    } catch (err) {
      if (signal.aborted) return;
      showError(err);
      busy = false;
      refresh();
      submit.textContent = 'Extend';
    }
  });

  // The output to continue: its task read with the key, its audio (a signed link, or the file
  // with the key) decoded for the waveform, the splice halfway; else extend_after typed in.
  async function loadClip() {
    notes.clip = 'Loading its audio…';
    try {
      const d = await api(`/v1/extensions/${encodeURIComponent(clip.task)}`, { signal });
      if (!clipProvider.value) clipProvider.value = d.provider || '';
      const o = (d.outputs || []).find((x) => x.index === clip.index);
      if (o && o.title) clipTitle.textContent = ` · ${o.title}`;
      const src = o && o.status === 'ready' ? audioSource(o.audio) : null;
      if (!o) notes.clip = `Task ${clip.task} has no output ${clip.index}.`;
      else if (o.status !== 'ready') notes.clip = `Output ${clip.index} is ${o.status}, not ready.`;
      else if (!src) notes.clip = 'Its audio is not a file of this gateway: no waveform here.';
      if (!src) return;
      const audio = await decode(await (await audioBlob(src, signal)).arrayBuffer());
      songs.clip = { name: `Output ${clip.index}`, audio };
      if (after.value === '') after.value = (Math.round(audio.duration * 50) / 100).toFixed(2);
    } catch (e) {
      if (signal.aborted) return;
      notes.clip = e instanceof ApiError && e.status === 410
        ? 'Its audio expired and was deleted (retention): the gateway will refuse it.'
        : `No waveform: its audio could not be loaded (${problemText(e)}).`;
    } finally {
      if (!signal.aborted && mode === 'clip') show('clip');
    }
  }

  if (query && new URLSearchParams(query).has('clip') && !clip)
    errors.textContent = 'This link names no output (?clip=<task id>-<n>): choose a source.';
  show(mode);
  if (clip) loadClip();
}
