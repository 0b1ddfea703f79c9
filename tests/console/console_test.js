#!/usr/bin/env node
// The web console (/console) end to end in real headless Chromium: the real segue binary with
// the sandbox provider, driven by puppeteer-core. Enter a key, upload a song, pick the splice on
// the waveform (click, then the keyboard), submit (the upload throttled: cancel one midway, which
// creates nothing, then see the next one's progress reach 100 %), watch the task reach
// `succeeded` live, play an output (canplay, then playing, lyrics highlighted); extend a song by
// its URL (served by the test on 127.0.0.1, sent as JSON) and an output by its "Extend this
// output" (the clip `<task id>-1`, its waveform on the New page; the gateway passes the
// output's link at api.public_base_url); redeliver dead webhook deliveries, see the providers;
// a retry and a failover in a task's timeline (MusicGPT configured at a closed port, so it fails
// before the route moves on to the sandbox); a pending delivery with its next attempt (a
// receiver that answers 503 with Retry-After); the task list's filters; the task page's
// waveforms seek by keyboard; another tenant's key sees none of it; the pages fit a phone's
// width. Any console error or page error fails the test (but for the failed requests that a step
// provokes on purpose, 422s, which Chromium logs). Screenshots of every step go to --out.
//
//   node console_test.js --segue build/segue --out build/console-artifacts [--chromium PATH]

'use strict';
const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const assert = require('node:assert/strict');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}
const segueBinary = path.resolve(arg('segue', 'build/segue'));
const outDir = path.resolve(arg('out', 'build/console-artifacts'));
const chromium = arg('chromium', process.env.SEGUE_CHROMIUM || '/usr/bin/chromium');

let puppeteer;
try {
  puppeteer = require('puppeteer-core');
} catch {
  console.error('puppeteer-core is not installed: scripts/setup.sh --test (npm ci in tests/console)');
  process.exit(1);
}
if (!fs.existsSync(chromium)) {
  console.error(`no Chromium at ${chromium}: scripts/setup.sh --test installs Debian's chromium`);
  process.exit(1);
}

const KEY_A = 'sk-console-alpha';
const KEY_B = 'sk-console-beta';
const SIGNING_KEY = 'console-test-url-signing-key';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A 6 s mono 22.05 kHz 16-bit WAV: a chord with a beat-like envelope, so the waveform has shape.
function writeSong(file) {
  const rate = 22050;
  const secs = 6;
  const n = rate * secs;
  const buf = Buffer.alloc(44 + n * 2);
  buf.write('RIFF', 0); buf.writeUInt32LE(36 + n * 2, 4); buf.write('WAVE', 8);
  buf.write('fmt ', 12); buf.writeUInt32LE(16, 16); buf.writeUInt16LE(1, 20);
  buf.writeUInt16LE(1, 22); buf.writeUInt32LE(rate, 24); buf.writeUInt32LE(rate * 2, 28);
  buf.writeUInt16LE(2, 32); buf.writeUInt16LE(16, 34); buf.write('data', 36);
  buf.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) {
    const t = i / rate;
    const beat = Math.exp(-((t * 2) % 1) * 4);
    const v = (Math.sin(2 * Math.PI * 220 * t) + 0.6 * Math.sin(2 * Math.PI * 277.2 * t) +
      0.4 * Math.sin(2 * Math.PI * 329.6 * t)) / 2 * (0.3 + 0.7 * beat) * (0.5 + t / 12);
    buf.writeInt16LE(Math.round(Math.max(-1, Math.min(1, v)) * 30000), 44 + i * 2);
  }
  fs.writeFileSync(file, buf);
}

// A port nothing listens on: bound, then closed.
function closedPort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

// A webhook endpoint that is busy: every delivery gets 503 with Retry-After: 600, so it stays
// pending with its next attempt ten minutes away.
function busyReceiver() {
  return new Promise((resolve, reject) => {
    const hits = [];
    const server = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        hits.push(req.url);
        res.writeHead(503, { 'Retry-After': '600', 'Content-Type': 'text/plain' });
        res.end('busy');
      });
    });
    server.listen(0, '127.0.0.1', () => resolve({ server, port: server.address().port, hits }));
    server.on('error', reject);
  });
}

// A plain HTTP server of the song on 127.0.0.1, as an audio_url source: it notes each path asked.
function songServer(file) {
  return new Promise((resolve, reject) => {
    const hits = [];
    const server = http.createServer((req, res) => {
      hits.push(req.url);
      if (req.url !== '/song.wav') {
        res.writeHead(404, { 'Content-Type': 'text/plain' });
        return res.end('no such song');
      }
      const body = fs.readFileSync(file);
      res.writeHead(200, { 'Content-Type': 'audio/wav', 'Content-Length': body.length });
      res.end(body);
    });
    server.listen(0, '127.0.0.1', () => resolve({ server, port: server.address().port, hits }));
    server.on('error', reject);
  });
}

// The gateway listens on `port` (a free one, chosen first) so that api.public_base_url can name
// it: a clip of its own output is sent to the provider as that output's link there.
async function startSegue(dir, port, deadPort) {
  const config = `server:
  listen: 127.0.0.1:${port}
  io_threads: 2
  drain_timeout: 2s
log:
  level: info
tenants:
  - name: alpha
    api_keys: [${KEY_A}]
    webhook_secrets: ["whsec_c2VndWUtY29uc29sZS10ZXN0LXNlY3JldC0wMDE="]
    credits: 100
  - name: beta
    api_keys: [${KEY_B}]
    credits: 100
storage:
  blob_dir: ${dir}/blobs
  sqlite_path: ${dir}/segue.db
engine:
  poll_interval: 100ms
api:
  public_base_url: http://127.0.0.1:${port}
  url_signing_key: ${SIGNING_KEY}
upstream:
  allow_plain_http: true
providers:
  sandbox:
    delay: 2s
    price: 1.5
    default_length: 3
  musicgpt:
    enabled: true
    base_url: http://127.0.0.1:${deadPort}/api/public
    api_key: mg-console-test
    price: 2
routing:
  routes:
    fallback:
      chain: [{provider: musicgpt}, {provider: sandbox}]
retry:
  transient: {max_attempts: 2, initial: 100ms, max: 200ms, jitter: 0}
fetch:
  allow_cidrs: [127.0.0.1/32]
  allowed_ports: []
webhooks:
  retry_schedule: [100ms, 100ms]
  jitter: 0
  timeout: 1s
`;
  fs.writeFileSync(path.join(dir, 'segue.yaml'), config);
  const portFile = path.join(dir, 'port');
  const log = fs.openSync(path.join(outDir, 'segue.log'), 'w');
  const child = spawn(segueBinary, ['--config', path.join(dir, 'segue.yaml'), '--port-file', portFile],
    { stdio: ['ignore', log, log] });
  let exited = null;
  child.on('exit', (code, sig) => { exited = sig || code; });
  for (let i = 0; i < 300; i++) {
    if (exited !== null) throw new Error(`segue exited (${exited}): see ${outDir}/segue.log`);
    if (fs.existsSync(portFile)) {
      const port = Number(fs.readFileSync(portFile, 'utf8').trim());
      if (port > 0) return { child, port };
    }
    await sleep(50);
  }
  throw new Error(`segue did not start: see ${outDir}/segue.log`);
}

async function main() {
  fs.mkdirSync(outDir, { recursive: true });
  for (const f of fs.readdirSync(outDir)) if (f.endsWith('.png')) fs.rmSync(path.join(outDir, f));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'segue-console-'));
  const song = path.join(dir, 'song.wav');
  writeSong(song);
  const hookPort = await closedPort();
  const busy = await busyReceiver();
  const songs = await songServer(song);
  const songUrl = `http://127.0.0.1:${songs.port}/song.wav`;
  const { child, port } = await startSegue(dir, await closedPort(), await closedPort());
  const base = `http://127.0.0.1:${port}`;
  const call = async (p, key, init = {}) => {
    const r = await fetch(base + p, { ...init, headers: { Authorization: `Bearer ${key}`, ...(init.headers || {}) } });
    return { status: r.status, body: await r.json() };
  };

  const browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--autoplay-policy=no-user-gesture-required',
      '--use-fake-device-for-media-stream', '--disable-dev-shm-usage'],
  });
  const problems = [];
  // A failed request that a step provokes on purpose (an answer of `status` to a request of
  // `path`): Chromium logs it as a console error, which is then no problem. Any other is.
  let expectedFailure = null;
  let step = 0;
  const started = Date.now();
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1200, height: 900 });
    page.on('console', (m) => {
      if (m.type() !== 'error') return;
      const e = expectedFailure;
      if (e && m.text().includes(`the server responded with a status of ${e.status} `) &&
          new URL(m.location().url || 'about:blank').pathname === e.path) return;
      problems.push(`console error: ${m.text()} ${JSON.stringify(m.location())}`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    const shot = async (name) => {
      const file = path.join(outDir, `${String(++step).padStart(2, '0')}-${name}.png`);
      await page.screenshot({ path: file, fullPage: true });
      console.log(`  screenshot ${file}`);
    };
    const ok = (what) => {
      if (problems.length) throw new Error(`console/page error(s) before "${what}":\n  ${problems.join('\n  ')}`);
      console.log(`ok ${what} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    };

    // The page and its headers: self-only CSP, ETag, revalidated.
    const res = await page.goto(`${base}/console/`, { waitUntil: 'networkidle0' });
    assert.equal(res.status(), 200);
    const csp = res.headers()['content-security-policy'];
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'/);
    assert.ok(!/unsafe|https?:/.test(csp), csp);
    assert.ok(res.headers().etag);
    await page.waitForSelector('#api-key');
    await shot('sign-in');

    // 1. Enter a key.
    await page.type('#api-key', KEY_A);
    await page.keyboard.press('Enter');
    await page.waitForSelector('#task-rows');
    await page.waitForFunction(() => document.getElementById('tenant').textContent.includes('alpha'));
    assert.equal(await page.evaluate(() => location.href.includes('sk-')), false);
    assert.equal(await page.evaluate((k) => sessionStorage.getItem('segue.api_key') === k, KEY_A), true);
    await shot('tasks-empty');
    ok('signed in with the key (session storage, not in the URL)');

    // 2. Upload a song; its waveform; pick the splice by clicking, then nudge it by keyboard.
    await page.click('a[href="#/new"]');
    await page.waitForSelector('#drop');
    // Dropped, as from a file manager (the file input beside it takes the same path).
    await page.evaluate((data) => {
      const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
      const dt = new DataTransfer();
      dt.items.add(new File([bytes], 'song.wav', { type: 'audio/wav' }));
      const drop = document.getElementById('drop');
      for (const type of ['dragover', 'drop'])
        drop.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
    }, fs.readFileSync(song).toString('base64'));
    await page.waitForFunction(() => !document.getElementById('submit').disabled);
    const canvas = await page.$('#wave-new');
    const box = await canvas.boundingBox();
    await page.mouse.click(box.x + box.width * 0.4, box.y + box.height / 2);
    let picked = Number(await page.$eval('#extend-after', (e) => e.value));
    assert.ok(Math.abs(picked - 2.4) < 0.05, `clicked 40 % of 6 s, got extend_after ${picked}`);
    assert.equal(await page.evaluate(() => document.activeElement.id), 'wave-new');
    await page.keyboard.press('ArrowRight');
    await page.keyboard.press('ArrowRight');
    picked = Number(await page.$eval('#extend-after', (e) => e.value));
    assert.ok(Math.abs(picked - 2.6) < 0.06, `two arrow presses: ${picked}`);
    await page.type('#prompt', 'a brighter chorus');
    await page.type('#lyrics-new', 'first new line\nsecond new line\nthird new line');
    await page.type('#length', '3');
    await page.type('#webhook-url', `http://127.0.0.1:${hookPort}/hook`);
    await shot('new-extension');
    ok(`song dropped and splice picked on the waveform at ${picked} s`);
    // Past the end of the song decoded here: said at once, and nothing is uploaded.
    const setAfter = (v) => page.$eval('#extend-after', (e, x) => {
      e.value = x;
      e.dispatchEvent(new Event('input'));
    }, v);
    let posts = 0;
    const countPosts = (r) => { if (r.method() === 'POST') posts++; };
    page.on('request', countPosts);
    await setAfter('7');
    await page.click('#submit');
    await page.waitForFunction(() => /^extend_after is beyond the end of the song \(\d\.\d{3} s\)$/
      .test(document.getElementById('form-errors').textContent));
    page.off('request', countPosts);
    assert.equal(posts, 0, 'nothing sent for an extend_after past the end');
    assert.equal(await page.$eval('#extend-after', (e) => e.getAttribute('aria-invalid')), 'true');
    await setAfter(String(picked));

    // 3. Submit, with the page's uploads slowed (DevTools' throttling, 120 kB/s: the song takes
    // about 2 s) so that the progress shows and can be canceled. A canceled upload creates no
    // task; the next one shows its bytes and percent up to 100 %, and the task page follows the
    // task live to `succeeded` (no reload: a marker survives).
    const listed = async () => (await call('/v1/extensions', KEY_A)).body.data.map((t) => t.id);
    assert.deepEqual(await listed(), []);
    await page.emulateNetworkConditions({ download: -1, upload: 120 * 1024, latency: 0 });
    await page.evaluate(() => {
      window.__progress = [];
      const p = document.getElementById('upload-progress');
      new MutationObserver(() => window.__progress.push({ sent: p.value, total: p.max,
        text: p.getAttribute('aria-valuetext') })).observe(p, { attributes: true });
    });
    const uploadShown = () => page.waitForFunction(() => {
      const p = document.getElementById('upload-progress');
      return !document.getElementById('uploading').hidden && p.value > 0.15 * p.max;
    }, { timeout: 10000 });
    // The same form sent again reuses its Idempotency-Key (a Cancel that came too late makes
    // no second task).
    const keys = [];
    const keyOf = (req) => {
      if (req.method() === 'POST' && new URL(req.url()).pathname === '/v1/extensions')
        keys.push(req.headers()['idempotency-key']);
    };
    page.on('request', keyOf);
    await page.click('#submit');
    await uploadShown();
    assert.equal(await page.$eval('#upload-progress', (p) => p.labels[0].textContent), 'Upload');
    await page.click('#cancel-upload');
    await page.waitForFunction(() => document.getElementById('uploading').hidden &&
      !document.getElementById('submit').disabled);
    const canceled = await page.$eval('#upload-status', (e) => e.textContent);
    assert.match(canceled, /^Upload canceled at [\d.]+ kB of [\d.]+ kB · \d+ %: nothing was created\.$/);
    assert.ok(Number(canceled.match(/(\d+) %/)[1]) < 100, canceled);
    assert.equal(await page.evaluate(() => location.hash), '#/new');
    await shot('upload-canceled');
    await sleep(300);
    assert.deepEqual(await listed(), [], 'a canceled upload created a task');
    ok(`upload canceled midway (${canceled}); no task`);

    await page.evaluate(() => { window.__progress = []; });
    await page.click('#submit');
    await uploadShown();
    await shot('uploading');
    await page.waitForFunction(() => /^#\/tasks\/ext_/.test(location.hash), { timeout: 15000 });
    await page.emulateNetworkConditions(null);
    page.off('request', keyOf);
    assert.equal(keys.length, 2, `POSTs: ${JSON.stringify(keys)}`);
    assert.ok(keys[0] && keys[0] === keys[1], `the resubmit's key: ${JSON.stringify(keys)}`);
    const steps = await page.evaluate(() => window.__progress);
    const total = fs.statSync(song).size;
    assert.ok(steps.some((p) => p.sent > 0 && p.sent < p.total), `no progress midway: ${JSON.stringify(steps)}`);
    const last = steps[steps.length - 1];
    assert.ok(last.total > total && last.total < total + 4096, `upload of ${last.total} bytes`);
    assert.equal(last.sent, last.total);
    assert.match(last.text, / · 100 %$/);
    ok(`upload progress reached 100 % in ${steps.length} steps (${last.text})`);
    const taskId = await page.evaluate(() => location.hash.slice('#/tasks/'.length));
    await page.evaluate(() => { window.__noReload = true; });
    await page.waitForSelector('#task-status[data-status]');
    const seen = [];
    const until = Date.now() + 30000;
    for (;;) {
      const s = await page.$eval('#task-status', (e) => e.dataset.status).catch(() => '');
      if (s && seen[seen.length - 1] !== s) {
        seen.push(s);
        if (seen.length === 1) await shot('task-live');
      }
      if (s === 'succeeded') break;
      assert.ok(!['failed', 'canceled', 'partially_succeeded'].includes(s), `task ended ${s}`);
      assert.ok(Date.now() < until, `task not succeeded in 30 s (saw ${seen})`);
      await sleep(50);
    }
    assert.ok(seen.length >= 2 && seen[0] !== 'succeeded', `status changed live: ${seen}`);
    assert.equal(await page.evaluate(() => window.__noReload), true);
    await page.waitForFunction(() => document.querySelectorAll('#timeline li[data-type="extension.succeeded"]').length === 1);
    await page.waitForSelector('#wave-source');
    await page.waitForSelector('#wave-output-1');
    await page.waitForSelector('#wave-output-2');
    await page.waitForFunction(() => document.getElementById('task-credits').textContent.includes('3 captured'));
    const attemptRows = await page.$$eval('#attempts tr', (r) => r.map((x) => x.textContent));
    assert.equal(attemptRows.length, 1);
    assert.match(attemptRows[0], /sandbox/);
    await page.waitForFunction(() => document.getElementById('title-1').textContent.length > 0);
    await page.waitForFunction(() => document.querySelectorAll('#lyrics-1 li').length === 3);
    await page.waitForFunction(() => { const i = document.getElementById('cover-1'); return !i.hidden && i.complete && i.naturalWidth > 0; });
    await shot('task-succeeded');
    ok(`task ${taskId} reached succeeded live (${seen.join(' -> ')})`);

    // 4. Play an output: the audio element reaches canplay and plays; seeking into the new part
    // (a click on its waveform) highlights the lyric line sung there.
    await page.$eval('audio[data-track="output-1"]', (a) => {
      window.__canplay = a.readyState >= 3;
      a.addEventListener('canplay', () => { window.__canplay = true; });
      a.addEventListener('playing', () => { window.__playing = true; });
    });
    await page.click('#outputs [data-output="1"] button.play');
    await page.waitForFunction(() => window.__canplay && window.__playing, { timeout: 10000 });
    await page.waitForFunction(() => { const a = document.querySelector('audio[data-track="output-1"]'); return !a.paused && a.currentTime > 0.3; }, { timeout: 10000 });
    const out = await page.$('#wave-output-1');
    const ob = await out.boundingBox();
    const axis = await page.evaluate(() => Math.max(...[...document.querySelectorAll('audio')].map((a) => a.duration)));
    await page.mouse.click(ob.x + ob.width * ((picked + 1.2) / axis), ob.y + ob.height / 2);
    await page.waitForSelector('#lyrics-1 li.now', { timeout: 5000 });
    await shot('output-playing');
    await page.click('#outputs [data-output="1"] button.play');  // pause
    // A/B from the splice: source first, then the output at the same moment.
    await page.click('#ab-1');
    await page.waitForFunction(() => !document.querySelector('audio[data-track="source"]').paused);
    await page.click('#ab-1');
    await page.waitForFunction(() => document.querySelector('audio[data-track="source"]').paused &&
      !document.querySelector('audio[data-track="output-1"]').paused);
    await page.click('#ab-1');
    await page.evaluate(() => document.querySelectorAll('audio').forEach((a) => a.pause()));
    ok('output 1 reached canplay and played; lyrics highlighted; A/B switched');

    // The gateway's check of each output is shown with it: its length, format and level.
    const verified = await page.$eval('#verify-1', (e) => e.textContent);
    assert.match(verified, /^Checked: \d+:\d\d(\.\d+)? · WAV · [\d.]+ kHz · (mono|stereo) · .*LUFS.* dB jump at the splice/, verified);
    ok(`output 1's verification shown (${verified})`);

    // 4a. The task page's waveforms seek by keyboard: Shift+Tab from the output's play button
    // reaches its waveform (a slider); Home, the arrow keys (1 s, 5 s with Shift) and End move
    // the audio's playhead, which the slider reports.
    await page.focus('#outputs [data-output="1"] button.play');
    await page.keyboard.down('Shift');
    await page.keyboard.press('Tab');
    await page.keyboard.up('Shift');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'wave-output-1');
    assert.equal(await page.$eval('#wave-output-1', (c) => c.getAttribute('role')), 'slider');
    const seekState = () => page.$eval('#wave-output-1', (c) => ({
      now: Number(c.getAttribute('aria-valuenow')),
      max: Number(c.getAttribute('aria-valuemax')),
      at: document.querySelector('audio[data-track="output-1"]').currentTime,
    }));
    const seekedTo = async (want, what) => {
      await page.waitForFunction((w) => Math.abs(document.querySelector(
        'audio[data-track="output-1"]').currentTime - w) < 0.05, { timeout: 5000 }, want)
        .catch(async () => assert.fail(`${what}: ${JSON.stringify(await seekState())}, want ${want}`));
      const st = await seekState();
      assert.ok(Math.abs(st.now - want) < 0.05, `${what}: aria-valuenow ${st.now}, want ${want}`);
      return st;
    };
    await page.keyboard.press('Home');
    await seekedTo(0, 'Home');
    await page.keyboard.press('ArrowRight');
    await page.keyboard.press('ArrowRight');
    await seekedTo(2, 'two ArrowRight');
    await page.keyboard.down('Shift');
    await page.keyboard.press('ArrowRight');
    await page.keyboard.up('Shift');
    const outLength = (await seekState()).max;
    assert.ok(Math.abs(outLength - (picked + 3)) < 0.2, `output 1 is ${outLength} s`);
    await seekedTo(Math.min(7, outLength), 'Shift+ArrowRight');
    await page.keyboard.press('ArrowLeft');
    await seekedTo(Math.min(7, outLength) - 1, 'ArrowLeft');
    assert.equal(await page.$eval('audio[data-track="output-1"]', (a) => a.paused), true);
    await shot('output-seek-keyboard');
    await page.keyboard.press('Home');
    await seekedTo(0, 'Home again');
    ok(`output 1's waveform seeks by keyboard (0 -> 2 -> ${Math.min(7, outLength).toFixed(2)} s)`);

    // 4b. A signed link in the task (as GET /v1/extensions/{id} gives when the gateway signs
    // file links) is what the page plays and decodes: fetched without the key, streamed by the
    // audio element itself. The task's answer is rewritten here to carry one for output 2.
    const task = (await call(`/v1/extensions/${taskId}`, KEY_A)).body;
    const wavId = task.outputs[1].audio.wav_file_id;
    const expires = Math.floor(Date.now() / 1000) + 600;
    const sig = crypto.createHmac('sha256', SIGNING_KEY).update(`${wavId}.${expires}`).digest('hex');
    const signedPath = `/v1/files/${wavId}?expires=${expires}&sig=${sig}`;
    const signedRequests = [];
    await page.setRequestInterception(true);
    const intercept = async (req) => {
      const u = new URL(req.url());
      if (u.pathname === signedPath.split('?')[0] && u.search) {
        signedRequests.push(req.headers().authorization || 'no authorization');
        return req.continue();
      }
      if (req.method() !== 'GET' || u.pathname !== `/v1/extensions/${taskId}`) return req.continue();
      const doc = (await call(u.pathname, KEY_A)).body;
      doc.outputs[1].audio.wav_signed_url = signedPath;
      return req.respond({ status: 200, contentType: 'application/json', body: JSON.stringify(doc) });
    };
    page.on('request', intercept);
    await page.evaluate(() => { location.hash = '#/providers'; });
    await page.waitForSelector('#provider-rows tr');
    await page.evaluate((id) => { location.hash = `#/tasks/${id}`; }, taskId);
    await page.waitForSelector('#wave-output-2');
    assert.equal(await page.$eval('audio[data-track="output-2"]', (a) => new URL(a.src).pathname + new URL(a.src).search), signedPath);
    // Output 1 plays by the task's own signed link when the gateway gives one, else by a blob
    // fetched with the key.
    const real = (await call(`/v1/extensions/${taskId}`, KEY_A)).body.outputs[0].audio.wav_signed_url;
    const src1 = await page.$eval('audio[data-track="output-1"]', (a) => a.src);
    if (real) assert.equal(new URL(src1).pathname + new URL(src1).search, real.replace(/^https?:\/\/[^/]+/, ''));
    else assert.match(src1, /^blob:/);
    await page.$eval('audio[data-track="output-2"]', (a) => {
      a.addEventListener('playing', () => { window.__signedPlaying = true; });
    });
    await page.click('#outputs [data-output="2"] button.play');
    await page.waitForFunction(() => window.__signedPlaying === true, { timeout: 10000 });
    await page.evaluate(() => document.querySelectorAll('audio').forEach((a) => a.pause()));
    assert.ok(signedRequests.length >= 2, `signed link fetched and streamed: ${signedRequests.length}`);
    assert.ok(signedRequests.every((h) => h === 'no authorization'), 'a signed link is fetched without the key');
    page.off('request', intercept);
    await page.setRequestInterception(false);
    ok('a signed link in the task is played and decoded without the key');
    // Each output offers its WAV and MP3 as downloads: the signed link, as an attachment.
    for (const fmt of ['wav', 'mp3']) {
      const href = await page.$eval(`#download-${fmt}-1`, (a) => a.getAttribute('href'));
      const got = await fetch(`${base}${href}`);
      assert.equal(got.status, 200, `${fmt} download`);
      assert.match(got.headers.get('content-disposition') || '', /^attachment; filename=/);
      await got.arrayBuffer();
    }
    ok('each output has WAV and MP3 download links');
    // A signed link opened in a tab of its own (shared, or "open in new tab") plays in the
    // browser's own player: the file's sandboxing CSP lets the media in (it blocked it once).
    {
      const tab = await browser.newPage();
      const blocked = [];
      // Chromium's own page around the media may try a script, which the file's sandboxing CSP
      // blocks on purpose (no script runs in a file's page): only a refused file counts.
      tab.on('console', (m) => {
        if (m.type() === 'error' && !/^Blocked script execution in .* sandboxed/.test(m.text()))
          blocked.push(m.text());
      });
      const r = await tab.goto(`${base}${signedPath}`);
      assert.equal(r.status(), 200);
      await tab.waitForFunction(() => {
        const m = document.querySelector('video, audio');
        return m && m.readyState >= 1 && m.duration > 0;
      }, { timeout: 10000 }).catch(() => {});
      const duration = await tab.evaluate(() => document.querySelector('video, audio')?.duration ?? 0);
      await tab.close();
      assert.deepEqual(blocked, [], 'the browser\'s player was refused the file');
      assert.ok(duration > 0, `the player has the file (duration ${duration})`);
    }
    ok('a signed link opened in a tab plays in the browser\'s own player');
    // A tab left open on a task reads it again a minute before its first signed link ends, and
    // the download buttons and the paused players take the new links. The task's answer is
    // rewritten: first to say output 1's links end in 61 s, then to carry a new WAV link.
    {
      const wav1 = task.outputs[0].audio.wav_file_id;
      const later = Math.floor(Date.now() / 1000) + 1200;
      const sig2 = crypto.createHmac('sha256', SIGNING_KEY).update(`${wav1}.${later}`).digest('hex');
      const renewed = `/v1/files/${wav1}?expires=${later}&sig=${sig2}`;
      let reads = 0;
      let opened = Date.now();
      await page.setRequestInterception(true);
      const renew = async (req) => {
        const u = new URL(req.url());
        if (req.method() !== 'GET' || u.pathname !== `/v1/extensions/${taskId}`) return req.continue();
        const doc = (await call(u.pathname, KEY_A)).body;
        const audio = doc.outputs[0].audio;
        // The page reads the task as it opens (and at each event its stream replays): for 3 s
        // the links end in 61 s, so only the page's timer, 5 s after, reads the new one.
        ++reads;
        if (Date.now() - opened < 3000) audio.signed_url_expires_at = new Date(Date.now() + 61000).toISOString();
        else audio.wav_signed_url = renewed;
        return req.respond({ status: 200, contentType: 'application/json', body: JSON.stringify(doc) });
      };
      page.on('request', renew);
      await page.evaluate(() => { location.hash = '#/providers'; });
      await page.waitForSelector('#provider-rows tr');
      opened = Date.now();
      await page.evaluate((id) => { location.hash = `#/tasks/${id}`; }, taskId);
      await page.waitForSelector('#download-wav-1');
      await page.waitForFunction((r) => (document.getElementById('download-wav-1')?.getAttribute('href') || '')
        .startsWith(r), { timeout: 20000 }, renewed).catch(async (e) => {
        throw new Error(`${e.message}; reads ${reads}; href ${await page.$eval('#download-wav-1', (a) => a.getAttribute('href'))}`);
      });
      const src = await page.$eval('audio[data-track="output-1"]', (a) => new URL(a.src).pathname + new URL(a.src).search);
      assert.equal(src, renewed, 'the paused player took the new link');
      page.off('request', renew);
      await page.setRequestInterception(false);
      assert.ok(Date.now() - opened >= 3000, 'renewed by the timer');
    }
    ok('signed links are renewed before they end in a tab left open');
    // A task page whose event stream the server refuses (503, as while its database is away)
    // tries again less and less often, not every second, and connects once it is back.
    {
      const tries = [];
      let refusing = true;
      await page.setRequestInterception(true);
      const refuse = (req) => {
        const u = new URL(req.url());
        if (u.pathname !== `/v1/extensions/${taskId}/events` || !/event-stream/.test(req.headers().accept || ''))
          return req.continue();
        if (!refusing) return req.continue();
        tries.push(Date.now());
        return req.respond({ status: 503, contentType: 'application/problem+json',
          body: JSON.stringify({ type: 'about:blank', title: 'Service Unavailable', status: 503, code: 'unavailable' }) });
      };
      page.on('request', refuse);
      expectedFailure = { status: 503, path: `/v1/extensions/${taskId}/events` };
      await page.evaluate(() => { location.hash = '#/providers'; });
      await page.waitForSelector('#provider-rows tr');
      await page.evaluate((id) => { location.hash = `#/tasks/${id}`; }, taskId);
      await page.waitForFunction(() => document.getElementById('live-state')?.textContent === 'reconnecting…');
      await new Promise((res) => setTimeout(res, 7000));
      refusing = false;
      const gaps = tries.slice(1).map((t, i) => t - tries[i]);
      // A fixed second would have tried 7 or 8 times: 1, 2, 4 (each jittered down to half).
      assert.ok(tries.length >= 2 && tries.length <= 5, `${tries.length} tries in 7 s: gaps ${gaps}`);
      assert.ok(gaps.length < 2 || gaps[gaps.length - 1] > gaps[0], `the waits grow: ${gaps}`);
      // The task is final: once the stream is back it replays the events and ends ('final').
      await page.waitForFunction(() => ['live', 'final'].includes(document.getElementById('live-state')?.textContent),
        { timeout: 20000 });
      expectedFailure = null;
      page.off('request', refuse);
      await page.setRequestInterception(false);
    }
    ok('a refused event stream is tried again less and less often, then connects');

    // 4c. A song by URL: the source "Audio URL", extend_after typed in (no waveform of a song
    // elsewhere), sent as JSON; the gateway fetches it from the test's own server. Without
    // extend_after the gateway's 422 shows as it is and marks that field.
    await page.evaluate(() => { location.hash = '#/new'; });
    await page.waitForSelector('#upload-panel:not([hidden])');
    await page.click('#source-url');
    await page.waitForSelector('#audio-url');
    assert.deepEqual(await page.evaluate(() => ({
      upload: document.getElementById('upload-panel').hidden,
      wave: document.getElementById('wave-new').hidden,
      submit: document.getElementById('submit').disabled,
      hint: document.getElementById('extend-after-hint').textContent,
    })), { upload: true, wave: true, submit: true,
      hint: 'Seconds into the song: type it in (the console has no waveform of a song elsewhere)' });
    await page.type('#audio-url', 'ftp://127.0.0.1/song.wav');
    assert.equal(await page.$eval('#submit', (b) => b.disabled), true, 'an ftp URL is not sendable');
    // and it says why
    assert.equal(await page.$eval('#url-error', (e) => (e.hidden ? '' : e.textContent)),
      'Only http:// and https:// URLs can be fetched.');
    await page.$eval('#audio-url', (e) => { e.value = ''; });
    await page.type('#audio-url', songUrl);
    assert.equal(await page.$eval('#url-error', (e) => e.hidden), true);
    await page.select('#num-outputs', '1');
    await page.type('#length', '2');
    expectedFailure = { status: 422, path: '/v1/extensions' };
    await page.click('#submit');
    await page.waitForFunction(() => document.getElementById('form-errors').textContent.length > 0);
    expectedFailure = null;
    assert.match(await page.$eval('#form-errors', (e) => e.textContent), /^1 invalid field\(s\): extend_after: extend_after is required/);
    assert.equal(await page.$eval('#extend-after', (e) => e.getAttribute('aria-invalid')), 'true');
    assert.equal(await page.$eval('#audio-url', (e) => e.hasAttribute('aria-invalid')), false);
    await page.type('#extend-after', '2.5');
    await shot('new-from-url');
    const posted = page.waitForRequest((r) => r.method() === 'POST' &&
      new URL(r.url()).pathname === '/v1/extensions');
    await page.click('#submit');
    const sent = await posted;
    assert.equal(sent.headers()['content-type'], 'application/json');
    assert.ok(sent.headers()['idempotency-key'], 'an Idempotency-Key');
    assert.deepEqual(JSON.parse(sent.postData()),
      { audio_url: songUrl, extend_after: 2.5, num_outputs: 1, length: 2 });
    await page.waitForFunction(() => /^#\/tasks\/ext_/.test(location.hash));
    const urlId = await page.evaluate(() => location.hash.slice('#/tasks/'.length));
    await page.waitForSelector('#task-status[data-status="succeeded"]', { timeout: 20000 });
    await page.waitForSelector('#outputs [data-output="1"][data-status="ready"]');
    const urlTask = (await call(`/v1/extensions/${urlId}`, KEY_A)).body;
    assert.equal(urlTask.request.source.type, 'url');
    assert.equal(urlTask.request.source.url, songUrl);
    assert.equal(urlTask.request.extend_after, 2.5);
    assert.ok(songs.hits.includes('/song.wav'), `the song was not fetched: ${songs.hits}`);
    assert.match(await page.$eval('#source', (e) => e.textContent), new RegExp(`Fetched from ${songUrl}`));
    await shot('task-from-url');
    ok(`task ${urlId} from an audio URL (JSON) succeeded; a missing extend_after was marked`);
    await page.evaluate((id) => { location.hash = `#/tasks/${id}`; }, taskId);
    await page.waitForSelector('#wave-output-2');

    // 4d. "Extend this output": the New page opens with that output as its source (the clip
    // `<task id>-1` of the task's provider), its waveform loaded with the key, and sends it as
    // JSON; the gateway hands the provider the output's link (api.public_base_url) and the new
    // task succeeds. First a clip that names no output: the gateway's 422 shows as it is.
    const first = (await call(`/v1/extensions/${taskId}`, KEY_A)).body;
    const extendHref = await page.$eval('#extend-1', (a) => a.getAttribute('href'));
    assert.equal(extendHref, `#/new?clip=${taskId}-1&provider=${first.provider}`);
    assert.equal(await page.$eval('#extend-2', (a) => a.getAttribute('aria-label')),
      'Extend this output (output 2)');
    await page.evaluate((id) => { location.hash = `#/new?clip=${id}-9&provider=sandbox`; }, taskId);
    await page.waitForFunction(() => document.getElementById('file-info').textContent.includes('has no output 9'));
    assert.equal(await page.$eval('#wave-new', (c) => c.hidden), true);
    await page.type('#extend-after', '1');
    expectedFailure = { status: 422, path: '/v1/extensions' };
    await page.click('#submit');
    await page.waitForFunction(() => document.getElementById('form-errors').textContent.length > 0);
    expectedFailure = null;
    // As the gateway words it: the detail, then each of errors[] (field, message).
    assert.match(await page.$eval('#form-errors', (e) => e.textContent),
      /^\d invalid field\(s\): clip\.id\b.*: clip\.id no such output\b/);
    assert.equal(await page.$eval('#clip-id', (e) => e.getAttribute('aria-invalid')), 'true');
    await page.evaluate((id) => { location.hash = `#/tasks/${id}`; }, taskId);
    await page.waitForSelector('#extend-1');
    await page.click('#extend-1');
    await page.waitForFunction((h) => location.hash === h, {}, extendHref);
    await page.waitForSelector('#wave-new:not([hidden])');
    assert.deepEqual(await page.evaluate(() => ({
      checked: document.getElementById('source-clip').checked,
      info: document.getElementById('clip-info').textContent,
      id: document.getElementById('clip-id').value,
      provider: document.getElementById('clip-provider').value,
      upload: document.getElementById('upload-panel').hidden,
    })), { checked: true, info: `Continues output 1 of task ${taskId} · ${first.outputs[0].title}`,
      id: `${taskId}-1`, provider: first.provider, upload: true });
    const clipLength = first.outputs[0].audio.duration;
    assert.match(await page.$eval('#file-info', (e) => e.textContent),
      /^Output 1 · 0:0\d\.\d\d · extend after 0:0\d\.\d\d$/);
    const wb = await (await page.$('#wave-new')).boundingBox();
    await page.mouse.click(wb.x + wb.width * 0.75, wb.y + wb.height / 2);
    const clipAfter = Number(await page.$eval('#extend-after', (e) => e.value));
    assert.ok(Math.abs(clipAfter - clipLength * 0.75) < 0.1, `clicked 75 % of ${clipLength} s: ${clipAfter}`);
    await page.select('#num-outputs', '1');
    await shot('new-from-output');
    const clipPost = page.waitForRequest((r) => r.method() === 'POST' &&
      new URL(r.url()).pathname === '/v1/extensions');
    await page.click('#submit');
    assert.deepEqual(JSON.parse((await clipPost).postData()),
      { clip: { provider: first.provider, id: `${taskId}-1` }, extend_after: clipAfter, num_outputs: 1 });
    await page.waitForFunction(() => /^#\/tasks\/ext_/.test(location.hash));
    const extId = await page.evaluate(() => location.hash.slice('#/tasks/'.length));
    await page.waitForSelector('#task-status[data-status="succeeded"]', { timeout: 20000 });
    await page.waitForSelector('#outputs [data-output="1"][data-status="ready"]');
    const extTask = (await call(`/v1/extensions/${extId}`, KEY_A)).body;
    const source = extTask.request.source;
    assert.equal(source.type, 'url', JSON.stringify(source));
    assert.ok(source.url.startsWith(`${base}/v1/files/${first.outputs[0].audio.wav_file_id}?`),
      `the source is output 1's link: ${JSON.stringify(source)}`);
    assert.equal(extTask.request.extend_after, clipAfter);
    // That link is a file of this gateway: the new task's page shows it as its source.
    await page.waitForSelector('#wave-source');
    assert.match(await page.$eval('#source h3', (e) => e.textContent),
      /^Source a file of this gateway, by its link · 0:0\d\.\d\d · extend after /);
    await shot('task-from-output');
    ok(`task ${extId} extends output 1 of ${taskId} after ${clipAfter} s (its link) and succeeded`);
    await page.evaluate((id) => { location.hash = `#/tasks/${id}`; }, taskId);
    await page.waitForSelector('#wave-output-2');

    // 5. Deliveries: the webhook's port is closed, so its deliveries died after two retries.
    // Redeliver one, then all of the task's dead ones.
    let dead;
    for (let i = 0; i < 100; i++) {
      dead = (await call(`/v1/deliveries?status=dead&task_id=${taskId}`, KEY_A)).body.data;
      const pending = (await call(`/v1/deliveries?status=pending&task_id=${taskId}`, KEY_A)).body.data;
      if (dead.length > 0 && pending.length === 0) break;
      await sleep(100);
    }
    assert.ok(dead.length >= 3, `dead deliveries: ${dead.length}`);
    await page.click('a[href^="#/deliveries?task="]');
    await page.waitForFunction((n) => document.querySelectorAll('#dead-rows tr').length === n, {}, dead.length);
    const firstDead = await page.$eval('#dead-rows tr', (r) => ({ id: r.dataset.id, text: r.textContent,
      url: r.cells[3].textContent, attempts: r.cells[4].textContent, error: r.cells[5].textContent }));
    assert.equal(firstDead.url, `http://127.0.0.1:${hookPort}/hook`);
    assert.equal(firstDead.attempts, '3');
    // The last error is the connection's own failure (nothing listens on the port), as the API
    // tells it, and not an HTTP status: no answer came.
    const deadDoc = (await call(`/v1/deliveries/${firstDead.id}`, KEY_A)).body;
    assert.ok(deadDoc.last_error, `a dead delivery without last_error: ${JSON.stringify(deadDoc)}`);
    assert.equal(deadDoc.last_status, undefined);
    assert.equal(firstDead.error, deadDoc.last_error);
    assert.match(firstDead.error, /refused/i);
    await shot('deliveries-dead');
    // A redelivery starts a fresh schedule (attempts from 0): it shows as a later updated_at.
    const before = (await call(`/v1/deliveries/${firstDead.id}`, KEY_A)).body.updated_at;
    await page.click('#dead-rows tr button.redeliver');
    await page.waitForFunction(() => document.getElementById('toast').textContent.includes('1 delivery queued again'));
    for (let i = 0; i < 100; i++) {
      const d = (await call(`/v1/deliveries/${firstDead.id}`, KEY_A)).body;
      if (d.updated_at > before && d.status === 'dead' && d.attempts === 3) break;
      assert.ok(i < 99, `redelivered delivery not attempted again: ${JSON.stringify(d)}`);
      await sleep(100);
    }
    await shot('deliveries-redelivered');
    const lastUpdate = (await call(`/v1/deliveries?status=dead&task_id=${taskId}`, KEY_A)).body.data
      .reduce((s, d) => (d.updated_at > s ? d.updated_at : s), '');
    await page.click('#refresh-deliveries');
    await page.waitForFunction((n) => document.querySelectorAll('#dead-rows tr').length === n &&
      !document.getElementById('redeliver-all').disabled, {}, dead.length);
    await page.waitForSelector('#redeliver-all:not([hidden])');
    // All of them in one request to the task-wide endpoint, so they go out in sequence order
    // (one by one, newest first as listed, a receiver would get them backwards).
    const redeliveries = [];
    const onRedeliver = (r) => {
      if (r.method() === 'POST' && /redeliver$/.test(new URL(r.url()).pathname))
        redeliveries.push({ path: new URL(r.url()).pathname, body: r.postData() });
    };
    page.on('request', onRedeliver);
    await page.click('#redeliver-all');
    await page.waitForFunction((n) => document.getElementById('toast').textContent.includes(`${n} deliveries queued again`), {}, dead.length);
    page.off('request', onRedeliver);
    assert.deepEqual(redeliveries.map((r) => r.path), ['/v1/deliveries/redeliver']);
    assert.deepEqual(JSON.parse(redeliveries[0].body), { task_id: taskId, status: 'dead' });
    for (let i = 0; i < 100; i++) {
      const all = (await call(`/v1/deliveries?task_id=${taskId}`, KEY_A)).body.data;
      if (all.every((d) => d.status === 'dead' && d.updated_at > lastUpdate)) break;
      assert.ok(i < 99, 'redeliver all: not every dead delivery was attempted again');
      await sleep(100);
    }
    ok(`redelivered one dead delivery, then all ${dead.length} of the task`);
    // Clearing the task filter clears it from the address too (a reload would bring it back).
    await page.$eval('#delivery-task', (e) => { e.value = ''; });
    await page.$eval('form.filters', (f) => f.requestSubmit());
    await page.waitForFunction(() => location.hash === '#/deliveries');
    // A task id that is none of the tenant's: the API's 400, said, and no rows left over.
    expectedFailure = { status: 400, path: '/v1/deliveries' };
    await page.$eval('#delivery-task', (e) => { e.value = 'ext_nosuchtask'; });
    await page.$eval('form.filters', (f) => f.requestSubmit());
    await page.waitForFunction(() => document.getElementById('delivery-counts').textContent
      .includes('task_id must be the id of one of your tasks'));
    // The three lists are asked for at once and the first 400 is shown: the other two answers
    // (and their console lines) may still be on their way.
    await page.waitForNetworkIdle({ idleTime: 300 });
    expectedFailure = null;
    assert.equal(await page.$$eval('#dead-rows tr, #pending-rows tr, #delivered-rows tr',
      (r) => r.length), 0);
    ok('a filter by another task id says why it shows nothing');

    // 6. Providers: capabilities, price, breaker, recent error rates.
    await page.click('a[href="#/providers"]');
    await page.waitForSelector('#provider-rows tr[data-provider="sandbox"]');
    const prov = await page.$eval('#provider-rows tr[data-provider="sandbox"]', (r) => r.textContent);
    assert.match(prov, /1\.5 credits/);
    assert.match(prov, /closed/);
    assert.match(prov, /0\.0 % of [1-9]/);
    await shot('providers');
    ok('providers page: price, circuit closed, error rates');

    // 6a. A retry and a failover in a task's timeline, with their reasons: the route `fallback`
    // tries MusicGPT (nothing listens at its base_url) twice, then moves on to the sandbox. No
    // `length`: MusicGPT takes none, so a request with one would skip it.
    const upload = (fields) => {
      const f = new FormData();
      f.append('audio_file', new Blob([fs.readFileSync(song)], { type: 'audio/wav' }), 'c.wav');
      for (const [k, v] of Object.entries(fields)) f.append(k, v);
      return call('/v1/extensions', KEY_A, { method: 'POST', body: f });
    };
    const fo = await upload({ extend_after: '3', num_outputs: '1', route: 'fallback',
      webhook_url: `http://127.0.0.1:${busy.port}/busy` });
    assert.equal(fo.status, 202, JSON.stringify(fo.body));
    assert.equal(fo.body.provider, 'musicgpt');
    const foId = fo.body.id;
    await page.evaluate((id) => { location.hash = `#/tasks/${id}`; }, foId);
    await page.waitForFunction(() => document.querySelectorAll(
      '#timeline li[data-type="extension.succeeded"]').length === 1, { timeout: 30000 });
    await page.waitForFunction(() => document.querySelectorAll('#attempts tr').length === 3);
    const retries = await page.$$eval('#timeline li[data-type="extension.retrying"]',
      (li) => li.map((x) => x.textContent));
    assert.equal(retries.length, 2, `retrying events: ${retries}`);
    assert.match(retries[0], /musicgpt failed · retry_same · next: musicgpt · reason: transient · upstream_unreachable submit: connect .*Connection refused/);
    assert.match(retries[1], /musicgpt failed · failover · next: sandbox · reason: transient · upstream_unreachable submit: connect .*Connection refused/);
    const foAttempts = await page.$$eval('#attempts tr', (r) => r.map((x) =>
      [...x.cells].map((c) => c.textContent)));
    assert.deepEqual(foAttempts.map((a) => [a[1], a[3]]),
      [['musicgpt', 'failed'], ['musicgpt', 'failed'], ['sandbox', 'succeeded']]);
    assert.match(foAttempts[0][4], /upstream_unreachable/);
    assert.equal(await page.$eval('#task-status', (e) => e.dataset.status), 'succeeded');
    await shot('task-failover');
    ok(`task ${foId}: a retry and a failover with their reasons in the timeline`);

    // 6b. Its deliveries are pending: the receiver answered the first one (the head of the
    // task's queue to that URL) 503 with Retry-After: 600, so its row shows that status as the
    // last error and its next attempt ten minutes away; the later events wait behind it.
    let onePending;
    let foPending = [];
    for (let i = 0; i < 100 && !onePending; i++) {
      foPending = (await call(`/v1/deliveries?status=pending&task_id=${foId}`, KEY_A)).body.data;
      onePending = foPending.find((d) => d.seq === 1 && d.attempts === 1);
      if (!onePending) await sleep(100);
    }
    assert.ok(onePending, `no tried pending delivery: ${JSON.stringify(foPending)}`);
    assert.ok(foPending.length >= 3, `pending deliveries: ${foPending.length}`);
    assert.deepEqual(busy.hits, ['/busy']);
    const ahead = Date.parse(onePending.next_attempt_at) - Date.now();
    assert.ok(ahead > 500000 && ahead <= 600000, `next attempt in ${ahead} ms`);
    await page.evaluate((id) => { location.hash = `#/deliveries?task=${id}`; }, foId);
    await page.waitForSelector(`#pending-rows tr[data-id="${onePending.id}"]`);
    const pendingRow = await page.$eval(`#pending-rows tr[data-id="${onePending.id}"]`, (r) =>
      ({ status: r.dataset.status, cells: [...r.cells].map((c) => c.textContent) }));
    assert.equal(pendingRow.status, 'pending');
    assert.equal(pendingRow.cells[3], `http://127.0.0.1:${busy.port}/busy`);
    assert.equal(pendingRow.cells[4], '1');
    assert.equal(onePending.last_status, 503);
    assert.equal(pendingRow.cells[5], 'HTTP 503');  // not "HTTP 503 · HTTP 503"
    const nextShown = await page.evaluate((t) => new Date(t).toLocaleTimeString(),
      onePending.next_attempt_at);
    assert.equal(pendingRow.cells[6], nextShown);
    // The ones behind it are tried after it, not at their own (past) due time.
    const behind = foPending.filter((d) => d.url === onePending.url && d.seq > onePending.seq);
    assert.ok(behind.length >= 2, `deliveries behind the first: ${behind.length}`);
    for (const d of behind) {
      const cells = await page.$eval(`#pending-rows tr[data-id="${d.id}"]`,
        (r) => [...r.cells].map((c) => c.textContent));
      assert.equal(cells[4], '0');
      assert.equal(cells[6], `after #${onePending.seq}`);
    }
    assert.equal(await page.$$eval('#dead-rows tr', (r) => r.length), 0);
    await shot('deliveries-pending');
    ok(`a pending delivery: last error ${pendingRow.cells[5]}, next attempt at ${nextShown}`);

    // 6c. The task list's filters: by status, by provider and by id, each narrowing the rows.
    // A task sent to MusicGPT alone fails there (after its retry): another status and provider.
    const mg = await upload({ extend_after: '1', provider: 'musicgpt' });
    assert.equal(mg.status, 202, JSON.stringify(mg.body));
    const mgId = mg.body.id;
    for (let i = 0; ; i++) {
      const st = (await call(`/v1/extensions/${mgId}`, KEY_A)).body.status;
      if (st === 'failed') break;
      assert.ok(i < 100 && !['succeeded', 'canceled'].includes(st), `musicgpt task ${st}`);
      await sleep(100);
    }
    await page.evaluate(() => { location.hash = '#/tasks'; });
    await page.waitForSelector(`#task-rows tr[data-id="${mgId}"][data-status="failed"]`);
    // The header's balance follows the ledger (it was read once, at sign-in, before).
    const available = (await call('/v1/credits?limit=1', KEY_A)).body.available;
    await page.waitForFunction((a) => document.getElementById('tenant').textContent
      .includes(`${a} credits available`), { timeout: 5000 }, available);
    ok(`the header's balance follows the ledger: ${available} credits available`);
    const rowIds = () => page.$$eval('#task-rows tr', (r) => r.map((x) => x.dataset.id).sort());
    const all = [taskId, foId, mgId, urlId, extId].sort();
    assert.deepEqual(await rowIds(), all);
    await page.select('#filter-status', 'failed');
    assert.deepEqual(await rowIds(), [mgId]);
    await shot('tasks-filter-status');
    await page.select('#filter-status', 'succeeded');
    assert.deepEqual(await rowIds(), [taskId, foId, urlId, extId].sort());
    await page.select('#filter-status', '');
    await page.waitForSelector('#filter-provider option[value="musicgpt"]');
    await page.select('#filter-provider', 'musicgpt');
    assert.deepEqual(await rowIds(), [mgId]);
    assert.match(await page.$eval(`#task-rows tr[data-id="${mgId}"]`, (r) => r.cells[2].textContent), /musicgpt/);
    await shot('tasks-filter-provider');
    await page.select('#filter-provider', 'sandbox');
    assert.deepEqual(await rowIds(), [taskId, foId, urlId, extId].sort());
    await page.select('#filter-provider', '');
    assert.deepEqual(await rowIds(), all);
    await page.type('#filter-id', taskId.slice(-10));
    assert.deepEqual(await rowIds(), [taskId]);
    await shot('tasks-filter-id');
    // Filters combine: this id is not a failed task.
    await page.select('#filter-status', 'failed');
    assert.deepEqual(await rowIds(), []);
    assert.equal(await page.$eval('#no-tasks', (e) => !e.hidden && e.textContent), 'No task matches the filters.');
    await page.select('#filter-status', '');
    await page.$eval('#filter-id', (e) => { e.value = ''; e.dispatchEvent(new Event('input')); });
    assert.deepEqual(await rowIds(), all);
    ok('task list filters: status, provider and id each narrow the rows, and combine');

    // 7. Phone width: nothing wider than the screen, the task page included.
    await page.setViewport({ width: 375, height: 800, isMobile: true });
    const phonePages = { '#/tasks': '#task-rows tr', [`#/tasks/${taskId}`]: '#wave-output-2',
      '#/new': '#drop', [`#/new?clip=${taskId}-1&provider=sandbox`]: '#wave-new:not([hidden])' };
    for (const [hash, shown] of Object.entries(phonePages)) {
      await page.evaluate((h) => { location.hash = h; }, hash);
      await page.waitForSelector(shown);
      await sleep(200);
      const wide = await page.evaluate(() => document.documentElement.scrollWidth);
      assert.ok(wide <= 376, `${hash} is ${wide}px wide at 375`);
    }
    await page.evaluate((h) => { location.hash = h; }, `#/tasks/${taskId}`);
    await page.waitForSelector('#wave-output-2');
    await shot('phone-task');
    await page.evaluate(() => { location.hash = '#/tasks'; });
    await page.waitForSelector('#task-rows tr');
    await shot('phone-tasks');
    await page.setViewport({ width: 1200, height: 900 });
    ok('readable at 375 px');

    // 8. Keyboard: every page is reachable from the navigation with Tab and Enter.
    await page.evaluate(() => { location.hash = '#/tasks'; });
    await page.waitForSelector('#task-rows tr');
    await page.evaluate(() => document.activeElement && document.activeElement.blur());
    const reached = new Set();
    const wanted = ['#/tasks', '#/new', '#/deliveries', '#/providers', 'sign-out'];
    for (let i = 0; i < 40 && !wanted.every((w) => reached.has(w)); i++) {
      await page.keyboard.press('Tab');
      reached.add(await page.evaluate(() => document.activeElement.getAttribute('href') || document.activeElement.id));
    }
    for (const want of wanted)
      assert.ok(reached.has(want), `Tab did not reach ${want}: ${[...reached]}`);
    ok('navigation keyboard reachable');

    // 9. The live list: a task created elsewhere (the API) appears without a reload.
    await page.waitForSelector(`#task-rows tr[data-id="${taskId}"][data-status="succeeded"]`);
    await page.evaluate(() => { window.__noReload = true; });  // (a viewport change reloads)
    const created = await upload({ extend_after: '3', length: '2', num_outputs: '1' });
    assert.equal(created.status, 202);
    await page.waitForSelector(`#task-rows tr[data-id="${created.body.id}"]`, { timeout: 10000 });
    await page.waitForSelector(`#task-rows tr[data-id="${created.body.id}"][data-status="succeeded"]`, { timeout: 20000 });
    assert.equal(await page.evaluate(() => window.__noReload), true);
    await shot('tasks-live-list');
    ok('the task list updated live (SSE) with a task created through the API');

    // 10. Another tenant's key sees none of the first tenant's tasks.
    await page.click('#sign-out');
    await page.waitForSelector('#api-key');
    await page.type('#api-key', KEY_B);
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.getElementById('tenant').textContent.includes('beta'));
    await page.waitForSelector('#no-tasks:not([hidden])');
    assert.equal(await page.$$eval('#task-rows tr', (r) => r.length), 0);
    assert.ok(!(await page.content()).includes(taskId));
    await page.click('a[href="#/deliveries"]');
    await page.waitForSelector('#delivery-counts');
    await page.waitForFunction(() => document.getElementById('delivery-counts').textContent.length > 0);
    assert.equal(await page.$$eval('#dead-rows tr, #pending-rows tr', (r) => r.length), 0);
    const other = await call(`/v1/extensions/${taskId}`, KEY_B);
    assert.equal(other.status, 404);
    const list = await call('/v1/extensions', KEY_B);
    assert.equal(list.body.data.length, 0);
    await shot('other-tenant');
    ok("another tenant's key sees none of the first tenant's tasks");

    // Revalidation: the console's files answer 304 to their ETag.
    const again = await fetch(`${base}/console/app.js`);
    const etag = again.headers.get('etag');
    assert.equal(again.headers.get('content-type'), 'text/javascript; charset=utf-8');
    const revalidated = await fetch(`${base}/console/app.js`, { headers: { 'If-None-Match': etag } });
    assert.equal(revalidated.status, 304);

    await page.close();
  } finally {
    await browser.close();
    busy.server.close();
    songs.server.close();
    child.kill('SIGTERM');
    await new Promise((r) => { if (child.exitCode !== null) r(); else child.on('exit', r); });
    fs.rmSync(dir, { recursive: true, force: true });
  }
  if (problems.length) {
    console.error(`FAILED: ${problems.length} console/page error(s):\n  ${problems.join('\n  ')}`);
    process.exit(1);
  }
  console.log(`PASSED in ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots in ${outDir}`);
}

main().catch((e) => {
  console.error('FAILED:', e && e.stack ? e.stack : e);
  console.error(`screenshots and segue.log in ${outDir}`);
  process.exit(1);
});
