// New extension: drop a song (or choose it), see its waveform, click it (or use the arrow
// keys) to choose extend_after, fill in the prompt, lyrics and options, submit (the upload shows
// its progress and can be canceled while it goes), and land on the live task page.

import { api, upload } from './api.js';
import { h, bytes, toast, problemText } from './dom.js';
import { decode, formatTime, Waveform } from './waveform.js';

export async function render(main, _params, signal) {
  let file = null;
  let busy = false;  // a submit is under way
  const fileInput = h('input', { id: 'audio-file', name: 'audio_file', type: 'file',
    accept: 'audio/*' });
  const drop = h('div', { class: 'drop', id: 'drop' },
    h('p', {}, 'Drop a song here, or '), h('label', { class: 'button' }, 'choose a file', fileInput));
  const canvas = h('canvas', { class: 'wave', id: 'wave-new', hidden: true });
  const wave = new Waveform(canvas, { label: 'Choose where to extend: click or use the arrow keys',
    interactive: true, onSeek: (t) => setSplice(t) });
  const fileInfo = h('p', { class: 'hint', id: 'file-info' });
  const after = h('input', { id: 'extend-after', name: 'extend_after', type: 'number', min: '0',
    step: '0.01', required: true });
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
  const form = h('form', { class: 'card', id: 'new-form', novalidate: true },
    h('h2', {}, 'New extension'), drop, canvas, fileInfo,
    field('Extend after (seconds)', after, 'Click the waveform to choose it'),
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

  function setSplice(t) {
    after.value = t.toFixed(2);
    wave.set({ splice: t });
    fileInfo.textContent = `${file.name} · ${formatTime(wave.audio.duration)} · extend after ` +
      formatTime(t);
  }
  after.addEventListener('input', () => {
    const t = Number(after.value);
    if (wave.audio && Number.isFinite(t)) wave.set({ splice: Math.min(Math.max(t, 0), wave.audio.duration) });
  });

  async function take(f) {
    if (!f) return;
    file = f;
    submit.disabled = true;
    fileInfo.textContent = `${f.name}: decoding…`;
    try {
      const audio = await decode(await f.arrayBuffer());
      canvas.hidden = false;
      wave.set({ audio, axis: audio.duration });
      setSplice(Math.round(audio.duration * 50) / 100);
      submit.disabled = busy;
      canvas.focus();
    } catch (e) {
      file = null;
      canvas.hidden = true;
      fileInfo.textContent = `${f.name}: this browser cannot decode it (${e.message})`;
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
  async function send(body, key) {
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

  function showError(err) {
    if (err.name === 'AbortError') {
      uploadStatus.textContent = `Upload canceled at ${progressText.textContent}: nothing was created.`;
      return;
    }
    uploadStatus.textContent = '';
    errors.textContent = problemText(err);
    for (const fe of (err.problem && err.problem.errors) || []) {
      const el = form.querySelector(`[name="${CSS.escape(fe.field)}"]`);
      if (el) el.setAttribute('aria-invalid', 'true');
    }
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    errors.textContent = '';
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
    if (!file) return;
    const body = new FormData();
    body.append('audio_file', file, file.name);
    body.append('extend_after', after.value);
    for (const el of [prompt, lyrics, lyricsNew, gender, outputs, length, provider, webhook])
      if (el.value.trim()) body.append(el.name, el.value.trim());
    busy = true;
    submit.disabled = true;
    submit.textContent = 'Uploading…';
    try {
      const task = await send(body, crypto.randomUUID());
      toast(`Task ${task.id} created`);
      location.hash = `#/tasks/${task.id}`;
    } catch (err) {
      if (signal.aborted) return;
      showError(err);
      busy = false;
      submit.disabled = false;
      submit.textContent = 'Extend';
    }
  });
}
