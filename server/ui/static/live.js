// Live figures computed from a broadcast's event stream: the sending rate (from the outcomes'
// own finished_at times, so a replay after a reconnect shows the rate they were sent at, not
// the speed of the replay) and the time left.

export const ACTIVE = new Set(["scheduled", "queued", "running", "paused", "recalling"]);
/** Statuses whose event stream still has something to say. */

const WINDOW = 10000; // ms of event time the rate is measured over

export class RateMeter {
  constructor() {
    this.samples = []; // [eventTimeMs, done]
    this.current = null;
  }

  /** One outcome-carrying moment: when (the event's finished_at) and how many are done. */
  add(at, done) {
    if (!Number.isFinite(at)) return;
    const samples = this.samples;
    if (samples.length && at < samples[samples.length - 1][0]) at = samples[samples.length - 1][0];
    samples.push([at, done]);
    while (samples.length > 2 && samples[0][0] < at - WINDOW) samples.shift();
    const [firstAt, firstDone] = samples[0];
    const span = (at - firstAt) / 1000;
    this.current = span >= 1 ? (done - firstDone) / span : this.current;
  }

  /** Nothing happened for a while (a heartbeat): the rate is 0. */
  idle() {
    this.samples = [];
    this.current = 0;
  }

  get rate() {
    return this.current;
  }
}

export function doneOf(progress) {
  return progress.sent + progress.failed;
}

export function eta(progress, rate) {
  if (!rate || rate <= 0 || !progress.pending) return null;
  return progress.pending / rate;
}
