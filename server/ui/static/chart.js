// The rate-over-time chart: outcomes per second (by their finished_at), drawn on a canvas,
// with the bot's limit as a dashed line. At most MAX_BARS bars: a long broadcast's seconds are
// grouped, so drawing stays cheap whatever its size.

const MAX_BARS = 120;

export class RateChart {
  constructor(canvas) {
    this.canvas = canvas;
    this.perSecond = new Map();
    this.first = Infinity;
    this.last = -Infinity;
    this.limit = null;
    this.frame = 0;
  }

  add(atMs, count = 1) {
    if (!Number.isFinite(atMs)) return;
    const second = Math.floor(atMs / 1000);
    this.perSecond.set(second, (this.perSecond.get(second) || 0) + count);
    if (second < this.first) this.first = second;
    if (second > this.last) this.last = second;
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); });
  }

  bars() {
    if (this.last < this.first) return { bars: [], width: 1 };
    const span = this.last - this.first + 1;
    const width = Math.max(1, Math.ceil(span / MAX_BARS));
    const bars = new Array(Math.ceil(span / width)).fill(0);
    for (const [second, count] of this.perSecond) bars[Math.floor((second - this.first) / width)] += count / width;
    return { bars, width };
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const cssWidth = canvas.clientWidth || 600;
    const cssHeight = canvas.clientHeight || 180;
    canvas.width = Math.round(cssWidth * ratio);
    canvas.height = Math.round(cssHeight * ratio);
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, cssWidth, cssHeight);
    const style = getComputedStyle(canvas);
    const ink = style.getPropertyValue("--chart-ink").trim() || "#2481cc";
    const muted = style.getPropertyValue("--muted").trim() || "#888";
    const warn = style.getPropertyValue("--warn").trim() || "#c60";
    const { bars, width } = this.bars();
    const left = 44;
    const bottom = cssHeight - 22;
    const top = 10;
    const peak = Math.max(1, this.limit || 0, ...bars);
    const scale = (bottom - top) / (peak * 1.1);
    g.font = "12px system-ui, sans-serif";
    g.fillStyle = muted;
    g.strokeStyle = muted;
    g.lineWidth = 1;
    g.beginPath();
    g.moveTo(left, top);
    g.lineTo(left, bottom);
    g.lineTo(cssWidth - 4, bottom);
    g.stroke();
    g.textAlign = "right";
    g.fillText(`${Math.round(peak * 1.1)}/s`, left - 4, top + 10);
    g.fillText("0", left - 4, bottom);
    if (!bars.length) {
      g.textAlign = "center";
      g.fillText("No outcomes yet", (left + cssWidth) / 2, (top + bottom) / 2);
      this.summary = "No outcomes yet.";
      canvas.setAttribute("aria-label", this.summary);
      return;
    }
    const barWidth = (cssWidth - left - 6) / Math.max(bars.length, 30);
    g.fillStyle = ink;
    bars.forEach((value, i) => {
      const height = value * scale;
      g.fillRect(left + 2 + i * barWidth, bottom - height, Math.max(1, barWidth - 1), height);
    });
    if (this.limit) {
      const y = bottom - this.limit * scale;
      g.strokeStyle = warn;
      g.setLineDash([5, 4]);
      g.beginPath();
      g.moveTo(left, y);
      g.lineTo(cssWidth - 4, y);
      g.stroke();
      g.setLineDash([]);
      g.fillStyle = warn;
      g.textAlign = "right";
      g.fillText(`limit ${this.limit}/s`, cssWidth - 6, y - 4);
    }
    g.fillStyle = muted;
    g.textAlign = "left";
    const seconds = bars.length * width;
    g.fillText(`${seconds} s${width > 1 ? ` (${width} s per bar)` : ""}`, left + 2, cssHeight - 6);
    const max = Math.max(...bars);
    this.summary = `Outcomes per second over ${seconds} seconds: peak ${max.toFixed(1)}, last ${bars[bars.length - 1].toFixed(1)}` +
      (this.limit ? `, limit ${this.limit}.` : ".");
    canvas.setAttribute("aria-label", this.summary);
  }
}
