// Waveforms: decode audio in the browser (WebAudio decodeAudioData), reduce it to peaks, and
// draw them on a canvas against a shared time axis, with the splice point and a playhead.

// Decoding resamples to the context's rate: 8 kHz is plenty for a picture and cheap.
export async function decode(arrayBuffer) {
  const ctx = new OfflineAudioContext(1, 1, 8000);
  const buffer = await ctx.decodeAudioData(arrayBuffer);
  const n = buffer.length;
  const mono = new Float32Array(n);
  for (let c = 0; c < buffer.numberOfChannels; c++) {
    const ch = buffer.getChannelData(c);
    for (let i = 0; i < n; i++) mono[i] += ch[i] / buffer.numberOfChannels;
  }
  return { samples: mono, rate: buffer.sampleRate, duration: buffer.duration };
}

export function formatTime(s) {
  if (!Number.isFinite(s)) return '–';
  const m = Math.floor(s / 60);
  const sec = s - m * 60;
  return `${m}:${sec.toFixed(2).padStart(5, '0')}`;
}

// One canvas. `axis` is the duration the full width stands for (shared by the source and the
// outputs of a task, so what was kept lines up). `splice` colours the part before it as kept.
// Keyboard: `interactive` (choosing the splice) moves the splice, 0.1 s per arrow key (1 s with
// Shift); `seekable` (a player's waveform) moves the playhead, 1 s per arrow key (5 s with
// Shift). Either makes the canvas a focusable slider; Home and End go to either end.
export class Waveform {
  constructor(canvas, { label = 'Waveform', onSeek, interactive = false, seekable = false } = {}) {
    this.canvas = canvas;
    this.audio = null;
    this.axis = 0;
    this.splice = null;
    this.playhead = null;
    this.onSeek = onSeek;
    this.picking = interactive;
    this.slider = interactive || (seekable && !!onSeek);
    canvas.setAttribute('role', this.slider ? 'slider' : 'img');
    canvas.setAttribute('aria-label', label);
    if (this.slider) {
      canvas.tabIndex = 0;
      canvas.setAttribute('aria-valuemin', '0');
    }
    if (onSeek) {
      canvas.addEventListener('click', (e) => {
        const r = canvas.getBoundingClientRect();
        const t = ((e.clientX - r.left) / r.width) * this.axis;
        onSeek(Math.max(0, Math.min(t, this.audio ? this.audio.duration : this.axis)));
      });
    }
    if (this.slider) {
      canvas.addEventListener('keydown', (e) => {
        if (!this.audio) return;
        const from = this.picking ? this.splice : (this.playhead || 0);
        if (from == null) return;
        const step = this.picking ? (e.shiftKey ? 1 : 0.1) : (e.shiftKey ? 5 : 1);
        let t = from;
        if (e.key === 'ArrowLeft' || e.key === 'ArrowDown') t -= step;
        else if (e.key === 'ArrowRight' || e.key === 'ArrowUp') t += step;
        else if (e.key === 'Home') t = 0;
        else if (e.key === 'End') t = this.audio.duration;
        else return;
        e.preventDefault();
        t = Math.max(0, Math.min(Math.round(t * 100) / 100, this.audio.duration));
        // The playhead moves at once, so a second key press counts from here (the audio
        // element's `seeked` comes later).
        if (!this.picking) this.setPlayhead(t);
        onSeek(t);
      });
    }
    this.resize = new ResizeObserver(() => this.draw());
    this.resize.observe(canvas);
  }

  set({ audio, axis, splice }) {
    if (audio !== undefined) this.audio = audio;
    if (axis !== undefined) this.axis = axis;
    if (splice !== undefined) this.splice = splice;
    if (this.slider && this.audio) {
      this.canvas.setAttribute('aria-valuemax', this.audio.duration.toFixed(2));
      if (this.picking && this.splice != null) {
        this.canvas.setAttribute('aria-valuenow', this.splice.toFixed(2));
        this.canvas.setAttribute('aria-valuetext', `extend after ${formatTime(this.splice)}`);
      } else if (!this.picking) {
        this.describePlayhead();
      }
    }
    this.draw();
  }

  describePlayhead() {
    const t = this.playhead || 0;
    const now = t.toFixed(2);
    if (this.canvas.getAttribute('aria-valuenow') === now) return;
    this.canvas.setAttribute('aria-valuenow', now);
    this.canvas.setAttribute('aria-valuetext', `at ${formatTime(t)}`);
  }

  setPlayhead(t) {
    this.playhead = t;
    if (this.slider && !this.picking) this.describePlayhead();
    this.draw();
  }

  draw() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(c.clientWidth * dpr));
    const h = Math.max(1, Math.round(c.clientHeight * dpr));
    if (c.width !== w || c.height !== h) {
      c.width = w;
      c.height = h;
    }
    const g = c.getContext('2d');
    const css = getComputedStyle(c);
    const kept = css.getPropertyValue('--kept').trim() || '#60a5fa';
    const fresh = css.getPropertyValue('--new').trim() || '#f59e0b';
    const mark = css.getPropertyValue('--mark').trim() || '#ef4444';
    const head = css.getPropertyValue('--head').trim() || '#e5e7eb';
    g.clearRect(0, 0, w, h);
    if (!this.audio || !this.axis) return;
    const { samples, duration } = this.audio;
    const mid = h / 2;
    const width = Math.min(w, Math.ceil((duration / this.axis) * w));
    const per = samples.length / width;
    for (let x = 0; x < width; x++) {
      let lo = 0;
      let hi = 0;
      const from = Math.floor(x * per);
      const to = Math.min(samples.length, Math.floor((x + 1) * per));
      for (let i = from; i < to; i++) {
        const v = samples[i];
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      const t = (x / w) * this.axis;
      g.fillStyle = this.splice != null && t >= this.splice ? fresh : kept;
      g.fillRect(x, mid - hi * mid, 1, Math.max(1, (hi - lo) * mid));
    }
    const at = (t) => Math.round((t / this.axis) * w);
    if (this.splice != null) {
      g.fillStyle = mark;
      g.fillRect(at(this.splice) - dpr, 0, 2 * dpr, h);
    }
    if (this.playhead != null) {
      g.fillStyle = head;
      g.fillRect(at(this.playhead), 0, dpr, h);
    }
  }
}
