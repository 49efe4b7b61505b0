// The queues view: per queue its jobs by state, running, the oldest due job's wait,
// pause and limits, a chart of the last 30 minutes, and pause / resume.

import { api } from './api.js';
import { queueChart } from './chart.js';
import { confirmAction, duration, fill, h, toast } from './dom.js';

const REFRESH_MS = 5000;
const WINDOW_MINUTES = 30;
/** Jobs running per queue, sampled at each refresh while the page is open. */
const samples = new Map();

export function queuesView(main, signal, session) {
  const cards = new Map();
  const list = h('div', { class: 'cards' });
  fill(main,
    h('h1', { tabindex: -1 }, 'Queues'),
    h('p', { class: 'muted' },
      `Refreshed every ${REFRESH_MS / 1000} s. Bars: jobs ended per minute over the last ${WINDOW_MINUTES} minutes, from the API. `,
      'Line: jobs running, sampled by this page at each refresh since it was opened (no history before).'),
    list);
  const refresh = async () => {
    const { queues } = await api('/v1/queues', { signal });
    const history = await Promise.all(queues.map((q) => api(
      `/v1/queues/${encodeURIComponent(q.queue)}/throughput?minutes=${WINDOW_MINUTES}`, { signal })));
    if (!queues.length) fill(list, h('p', {}, 'No queue has jobs yet.'));
    else if (!cards.size) list.replaceChildren();
    queues.forEach((queue, i) => {
      record(queue);
      if (!cards.has(queue.queue)) cards.set(queue.queue, newCard(queue.queue, list, refresh, session));
      updateCard(cards.get(queue.queue), queue, history[i].minutes);
    });
  };
  poll(refresh, signal);
}

/** Runs `refresh` now and every REFRESH_MS until `signal` aborts; reports failures once. */
async function poll(refresh, signal) {
  let failing = false;
  while (!signal.aborted) {
    try {
      await refresh();
      failing = false;
    } catch (error) {
      if (signal.aborted) return;
      if (!failing) toast(`Could not refresh the queues: ${error.message}`, 'error');
      failing = true;
    }
    await new Promise((resolve) => setTimeout(resolve, REFRESH_MS));
  }
}

function record(queue) {
  const now = Date.now();
  const series = samples.get(queue.queue) || [];
  series.push({ t: now, n: queue.running });
  while (series.length && series[0].t < now - WINDOW_MINUTES * 60_000) series.shift();
  samples.set(queue.queue, series);
}

/** A card whose heading and button stay in place across refreshes (focus survives). */
function newCard(name, list, refresh, session) {
  const titleId = `queue-${name.replace(/[^A-Za-z0-9_-]/g, '_')}`;
  const badge = h('span', { class: 'badge' });
  const button = h('button', { type: 'button', class: 'small' });
  const body = h('div', { class: 'queue-body' });
  const card = h('section', { class: 'card queue', 'data-queue': name, 'aria-labelledby': titleId },
    h('div', { class: 'card-head' }, h('h2', { id: titleId }, name), badge, button),
    body);
  button.addEventListener('click', () => togglePause(name, card.dataset.paused === 'true', refresh, session));
  list.append(card);
  return { card, badge, button, body };
}

function updateCard({ card, badge, button, body }, queue, minutes) {
  card.dataset.paused = String(queue.paused);
  badge.textContent = queue.paused ? 'paused' : 'active';
  badge.className = `badge ${queue.paused ? 'state-failed' : 'state-completed'}`;
  button.textContent = queue.paused ? 'Resume' : 'Pause';
  button.dataset.action = queue.paused ? 'resume' : 'pause';
  button.setAttribute('aria-label', `${queue.paused ? 'Resume' : 'Pause'} queue ${queue.queue}`);
  fill(body,
    h('dl', { class: 'counts' }, Object.entries(queue.counts).map(([state, n]) => h('div', { 'data-state': state },
      h('dt', {}, h('a', { href: `#/jobs?queue=${encodeURIComponent(queue.queue)}&state=${state}` }, state)),
      h('dd', {}, n)))),
    h('dl', { class: 'facts' },
      fact('Running', queue.running),
      fact('Oldest due job waited', queue.oldest_pending_age_ms === null ? 'none due' : duration(queue.oldest_pending_age_ms)),
      fact('Held back by limits', queue.throttled),
      fact('Limits', limitsText(queue.limits)),
      fact('Limits for all tenants', limitsText(queue.all_tenants_limits))),
    queueChart(minutes, samples.get(queue.queue) || []));
}

function fact(name, value) {
  return h('div', {}, h('dt', {}, name), h('dd', {}, value));
}

function limitsText(limits) {
  const parts = [];
  if (limits.concurrency) parts.push(`${limits.concurrency} at once`);
  if (limits.key_concurrency) parts.push(`${limits.key_concurrency} at once per key`);
  if (limits.rate) parts.push(`${limits.rate.limit} per ${limits.rate.period_seconds} s`);
  if (limits.key_rate) parts.push(`${limits.key_rate.limit} per ${limits.key_rate.period_seconds} s per key`);
  return parts.length ? parts.join(', ') : 'none';
}

async function togglePause(name, paused, refresh, session) {
  const verb = paused ? 'Resume' : 'Pause';
  const text = paused
    ? `Jobs of queue "${name}" start again for tenant ${session.tenant}.`
    : `No new job of queue "${name}" starts for tenant ${session.tenant} until it is resumed; running jobs finish.`;
  if (!await confirmAction(`${verb} queue ${name}?`, text, verb)) return;
  try {
    const queue = await api(`/v1/queues/${encodeURIComponent(name)}/${paused ? 'resume' : 'pause'}`, { method: 'POST' });
    toast(`Queue ${queue.queue} is ${queue.paused ? 'paused' : 'running again'}.`);
    await refresh();
  } catch (error) {
    toast(`${verb} failed: ${error.message}`, 'error');
  }
}
