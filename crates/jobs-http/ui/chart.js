// A queue's recent history as an inline SVG: bars of jobs ended per minute (from the
// API's throughput) and a line of jobs running (sampled by this page while it is open).

import { h } from './dom.js';

const W = 300;
const H = 90;
const PAD = 14;

/**
 * `minutes`: [{at, ended}] oldest first, one per minute; `running`: [{t (ms), n}].
 * The window spans the minutes given.
 */
export function queueChart(minutes, running) {
  const start = Date.parse(minutes[0].at);
  const span = minutes.length * 60_000;
  const peak = Math.max(1, ...minutes.map((m) => m.ended), ...running.map((r) => r.n));
  const y = (value) => H - PAD - (value / peak) * (H - 2 * PAD);
  const x = (t) => ((t - start) / span) * W;
  const total = minutes.reduce((sum, m) => sum + m.ended, 0);
  const now = running.length ? running[running.length - 1].n : 0;
  const label = `Last ${minutes.length} minutes: ${total} jobs ended, at most ${Math.max(0, ...minutes.map((m) => m.ended))} in a minute; ${now} running at the last sample.`;
  return h('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': label },
    h('title', {}, label),
    h('line', { x1: 0, x2: W, y1: H - PAD, y2: H - PAD, class: 'axis' }),
    minutes.map((m) => bar(x(Date.parse(m.at)), W / minutes.length, y(m.ended), m)),
    runningLine(running, x, y),
    h('text', { x: 0, y: H - 2, class: 'tick' }, `${minutes.length} min ago`),
    h('text', { x: W, y: H - 2, class: 'tick end' }, 'now'),
    h('text', { x: 0, y: 10, class: 'tick' }, `max ${peak}`),
    h('text', { x: W, y: 10, class: 'tick end', 'aria-hidden': 'true' },
      h('tspan', { class: 'key-ended' }, '■ '), 'ended per minute  ', h('tspan', { class: 'key-running' }, '— '), 'running'),
  );
}

function bar(left, width, top, minute) {
  if (!minute.ended) return null;
  return h('rect', { x: left + 0.5, y: top, width: Math.max(1, width - 1), height: H - PAD - top, class: 'ended' },
    h('title', {}, `${minute.at.slice(11, 16)} UTC: ${minute.ended} ended`));
}

function runningLine(samples, x, y) {
  const inside = samples.filter((s) => x(s.t) >= 0);
  if (!inside.length) return null;
  const points = inside.map((s) => `${x(s.t).toFixed(1)},${y(s.n).toFixed(1)}`);
  if (inside.length === 1) points.push(`${(x(inside[0].t) + 2).toFixed(1)},${y(inside[0].n).toFixed(1)}`);
  return h('polyline', { points: points.join(' '), class: 'running' });
}
