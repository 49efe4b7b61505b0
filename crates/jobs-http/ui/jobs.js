// The jobs view: a filterable list, newest first, in cursor pages, and bulk retry or
// cancel of every job the filter matches.

import { api, withQuery } from './api.js';
import { confirmAction, duration, fill, h, stateBadge, toast, when } from './dom.js';

const STATES = ['pending', 'waiting', 'running', 'completed', 'partial', 'failed', 'cancelled'];
/** The filter's fields, as `GET /v1/jobs` and the bulk filter name them. */
const FIELDS = ['q', 'state', 'kind', 'queue', 'created_after', 'created_before'];

export async function jobsView(main, signal, params) {
  const filter = Object.fromEntries(FIELDS.map((f) => [f, params.get(f) || '']));
  const results = h('div', { class: 'results', 'aria-live': 'polite', 'aria-busy': 'true' }, h('p', { class: 'muted' }, 'Loading…'));
  fill(main,
    h('h1', { tabindex: -1 }, 'Jobs'),
    filterForm(filter),
    bulkBar(filter),
    results);
  const cursor = params.get('cursor');
  const shown = location.hash;
  try {
    const page = await api(withQuery('/v1/jobs', { ...filter, cursor, limit: 25 }), { signal });
    fill(results, jobsTable(page.items), pager(filter, cursor, page.next_cursor));
  } catch (error) {
    if (signal.aborted) return;
    fill(results, h('p', { class: 'error', role: 'alert' }, `Could not list jobs: ${error.message}`));
  }
  results.setAttribute('aria-busy', 'false');
  // Which address this list answers, for tests and scripts that wait for it.
  results.dataset.loaded = shown;
}

function filterForm(filter) {
  const input = (name, label, attrs = {}) => h('div', { class: 'field' },
    h('label', { for: `f-${name}` }, label),
    h('input', { id: `f-${name}`, name, value: filter[name], ...attrs }));
  const time = (name, label) => input(name, label, { type: 'datetime-local', step: 1, value: filter[name].slice(0, 19) });
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter jobs' },
    input('q', 'Job id or unique key', { type: 'search', maxlength: 255, autocomplete: 'off' }),
    h('div', { class: 'field' },
      h('label', { for: 'f-state' }, 'State'),
      h('select', { id: 'f-state', name: 'state' },
        h('option', { value: '' }, 'any'),
        STATES.map((s) => h('option', { value: s, selected: s === filter.state }, s)))),
    input('kind', 'Kind', { autocomplete: 'off' }),
    input('queue', 'Queue', { autocomplete: 'off' }),
    time('created_after', 'Created after (UTC)'),
    time('created_before', 'Created before (UTC)'),
    h('div', { class: 'field buttons' },
      h('button', { type: 'submit', class: 'primary', id: 'apply-filter' }, 'Filter'),
      h('a', { href: '#/jobs', class: 'button' }, 'Clear')));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const values = Object.fromEntries(FIELDS.map((f) => [f, String(data.get(f) || '').trim()]));
    for (const f of ['created_after', 'created_before']) if (values[f]) values[f] = utc(values[f]);
    location.hash = withQuery('#/jobs', values);
  });
  return form;
}

/** `2026-12-04T16:20` or `...:05` from a datetime-local field, read as UTC. */
function utc(local) {
  return `${local.length === 16 ? `${local}:00` : local}Z`;
}

function jobsTable(items) {
  if (!items.length) return h('p', { class: 'empty' }, 'No job matches.');
  const head = ['Job', 'Kind', 'Queue', 'State', 'Attempt', 'Progress', 'Created (UTC)', 'Duration'];
  return h('div', { class: 'table-wrap' }, h('table', { class: 'jobs' },
    h('caption', { class: 'visually-hidden' }, 'Jobs, newest first'),
    h('thead', {}, h('tr', {}, head.map((name) => h('th', { scope: 'col' }, name)))),
    h('tbody', {}, items.map(jobRow))));
}

function jobRow(job) {
  const cell = (label, ...content) => h('td', { 'data-label': label }, ...content);
  return h('tr', { 'data-job-id': job.id, 'data-state': job.state, 'data-kind': job.kind },
    cell('Job', h('a', { href: `#/jobs/${job.id}`, class: 'mono' }, job.id)),
    cell('Kind', job.kind),
    cell('Queue', job.queue),
    cell('State', stateBadge(job.state), job.scheduled ? ' scheduled' : ''),
    cell('Attempt', `${job.attempt} / ${job.max_attempts}`),
    cell('Progress', `${Math.round(job.progress * 100)}%`),
    cell('Created (UTC)', when(job.created_at)),
    cell('Duration', duration(job.duration_ms)));
}

function pager(filter, cursor, next) {
  return h('nav', { class: 'pager', 'aria-label': 'Pages' },
    cursor ? h('a', { href: withQuery('#/jobs', filter), class: 'button' }, '« First page') : null,
    next ? h('a', { href: withQuery('#/jobs', { ...filter, cursor: next }), class: 'button', id: 'next-page' }, 'Next page »') : null);
}

function bulkBar(filter) {
  return h('div', { class: 'bulk' },
    h('span', { class: 'muted' }, 'Every job matching the filter (all pages):'),
    h('button', { type: 'button', id: 'bulk-retry', onclick: () => bulk('retry', filter) }, 'Retry matching…'),
    h('button', { type: 'button', id: 'bulk-cancel', onclick: () => bulk('cancel', filter) }, 'Cancel matching…'));
}

/** Counts the matching jobs (a dry run), asks, then acts and says what changed. */
async function bulk(action, filter) {
  const body = bulkFilter(filter);
  const verb = action === 'retry' ? 'Retry' : 'Cancel';
  try {
    const { matched } = await api('/v1/jobs/bulk', { method: 'POST', body: { action, filter: body, dry_run: true } });
    const what = describe(filter);
    if (!matched) {
      toast(`No job ${what} can be ${action === 'retry' ? 'retried' : 'cancelled'}.`);
      return;
    }
    const text = action === 'retry'
      ? `${matched} ended job(s) ${what} run again from attempt 0.`
      : `${matched} pending or running job(s) ${what} are cancelled (running ones are asked to stop).`;
    if (!await confirmAction(`${verb} ${matched} job(s)?`, text, `${verb} ${matched}`)) return;
    const done = await api('/v1/jobs/bulk', { method: 'POST', body: { action, filter: body } });
    toast(`${verb}: ${done.changed} of ${done.matched} matching job(s) changed.`);
    window.dispatchEvent(new HashChangeEvent('hashchange'));
  } catch (error) {
    toast(`${verb} failed: ${error.message}`, 'error');
  }
}

function bulkFilter(filter) {
  const body = Object.fromEntries(FIELDS.filter((f) => filter[f]).map((f) => [f, filter[f]]));
  return Object.keys(body).length ? body : { all: true };
}

function describe(filter) {
  const parts = FIELDS.filter((f) => filter[f]).map((f) => `${f} = ${filter[f]}`);
  return parts.length ? `matching ${parts.join(', ')}` : 'of your tenant';
}
