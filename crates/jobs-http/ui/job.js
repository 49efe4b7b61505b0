// The job view: everything about one job, its progress and stage live over Server-Sent
// Events, and cancel / retry.

import { ENDED, api, apiKey, watchJob } from './api.js';
import { confirmAction, duration, fill, h, json, stateBadge, toast, when } from './dom.js';

export async function jobView(main, signal, id) {
  let job;
  try {
    job = await api(`/v1/jobs/${encodeURIComponent(id)}`, { signal });
  } catch (error) {
    if (!signal.aborted) fill(main, h('h1', { tabindex: -1 }, 'Job'), h('p', { class: 'error', role: 'alert' }, error.message));
    return;
  }
  const page = layout(job);
  fill(main, page.root);
  let watching = null;
  const show = (next) => { job = { ...next, result_files: job.result_files, position_in_queue: next.position_in_queue ?? job.position_in_queue }; update(page, job); };
  const watch = () => {
    watching?.abort();
    watching = new AbortController();
    signal.addEventListener('abort', () => watching.abort(), { once: true });
    page.live.textContent = 'Live: following changes.';
    watchJob(job.id, show, watching.signal).then(() => {
      if (!signal.aborted) page.live.textContent = ENDED.includes(job.state) ? 'The job has ended.' : 'Live updates stopped; reload to follow again.';
    });
  };
  page.cancel.addEventListener('click', () => act('cancel', job, (next) => show(next)));
  page.retry.addEventListener('click', () => act('retry', job, (next) => { show(next); watch(); }));
  update(page, job);
  loadExtras(page, job, signal);
  watch();
}

/** The parts of the page; `update` fills the ones that change. */
function layout(job) {
  const part = (tag, attrs = {}) => h(tag, attrs);
  const page = {
    state: part('span', { id: 'job-state' }),
    progress: part('progress', { id: 'job-progress', max: 1, value: 0, 'aria-labelledby': 'progress-label' }),
    progressText: part('span', { id: 'job-progress-text', class: 'mono' }),
    stage: part('span', { id: 'job-stage' }),
    live: part('p', { class: 'muted live', id: 'job-live' }),
    facts: part('dl', { class: 'facts wide' }),
    result: part('div'),
    errors: part('div'),
    extras: part('div'),
    cancel: h('button', { type: 'button', id: 'cancel-job', class: 'danger' }, 'Cancel'),
    retry: h('button', { type: 'button', id: 'retry-job' }, 'Retry'),
  };
  page.root = h('article', { class: 'job', 'data-job-id': job.id },
    h('p', {}, h('a', { href: '#/jobs' }, '« Jobs')),
    h('div', { class: 'job-head' },
      h('h1', { tabindex: -1 }, 'Job ', h('span', { class: 'kind' }, job.kind)),
      page.state,
      h('div', { class: 'actions' }, page.cancel, page.retry)),
    h('p', { class: 'mono id' }, job.id),
    h('section', { class: 'card', 'aria-labelledby': 'progress-label' },
      h('h2', { id: 'progress-label' }, 'Progress'),
      h('div', { class: 'progress-row' }, page.progress, page.progressText),
      h('p', {}, 'Stage: ', page.stage),
      page.live),
    h('section', { class: 'card' }, h('h2', {}, 'Details'), page.facts),
    h('section', { class: 'card' }, h('h2', {}, 'Arguments'), h('pre', { id: 'job-args' }, json(job.args))),
    page.result,
    page.errors,
    page.extras);
  return page;
}

function update(page, job) {
  fill(page.state, stateBadge(job.state, { 'data-state': job.state }), job.cancel_requested && !ENDED.includes(job.state) ? ' cancel requested' : '');
  page.progress.value = job.progress;
  page.progress.setAttribute('value', String(job.progress));
  page.progressText.textContent = `${Math.round(job.progress * 100)}%`;
  page.stage.textContent = job.stage || '—';
  page.cancel.disabled = ENDED.includes(job.state) || job.cancel_requested;
  page.retry.disabled = !ENDED.includes(job.state);
  fill(page.facts, facts(job));
  fill(page.result, job.result !== null || job.item_errors !== null
    ? h('section', { class: 'card' }, h('h2', {}, 'Result'), h('pre', { id: 'job-result' }, json(job.result)),
      job.item_errors !== null ? [h('h3', {}, 'Item errors'), h('pre', {}, json(job.item_errors))] : null)
    : null);
  fill(page.errors, job.errors.length ? errorHistory(job.errors) : null);
}

function facts(job) {
  const rows = [
    ['Queue', h('a', { href: `#/jobs?queue=${encodeURIComponent(job.queue)}` }, job.queue)],
    ['Attempt', `${job.attempt} of ${job.max_attempts}`],
    ['Priority', job.priority],
    ['Worker', job.worker_id],
    ['Trace id', job.trace_id],
    ['Unique key', job.unique_key],
    ['Concurrency key', job.concurrency_key],
    ['Created (UTC)', when(job.created_at)],
    ['Runs at (UTC)', when(job.run_at)],
    ['Started (UTC)', when(job.started_at)],
    ['Finished (UTC)', when(job.finished_at)],
    ['Duration', duration(job.duration_ms ?? (job.started_at && !job.finished_at ? Date.now() - Date.parse(job.started_at) : null))],
    ['Deadline (UTC)', when(job.deadline)],
    ['Kept until (UTC)', when(job.expires_at)],
    ['Position in queue', job.position_in_queue],
    ['Likely start (UTC)', when(job.estimated_start_at)],
    ['Likely end (UTC)', when(job.estimated_completion_at)],
    ['Parents', job.parents ? `${job.parents} (${job.waiting_on} not yet ended as required)` : null],
    ['Workflow', job.workflow_id ? `${job.workflow_step ?? ''} in ${job.workflow_id}` : null],
  ];
  return rows.filter(([, value]) => value !== null && value !== undefined && value !== '')
    .map(([name, value]) => h('div', {}, h('dt', {}, name), h('dd', {}, value)));
}

function errorHistory(errors) {
  return h('section', { class: 'card' }, h('h2', {}, 'Errors by attempt'),
    h('div', { class: 'table-wrap' }, h('table', { class: 'errors' },
      h('thead', {}, h('tr', {}, ['Attempt', 'At (UTC)', 'Kind', 'Message'].map((n) => h('th', { scope: 'col' }, n)))),
      h('tbody', {}, errors.map((e) => h('tr', {},
        h('td', { 'data-label': 'Attempt' }, e.attempt),
        h('td', { 'data-label': 'At (UTC)' }, when(e.at)),
        h('td', { 'data-label': 'Kind' }, e.kind),
        h('td', { 'data-label': 'Message' }, e.message)))))));
}

/** Files and the workflow's steps, where the job has them. */
async function loadExtras(page, job, signal) {
  const sections = [];
  try {
    const inputs = await api(`/v1/jobs/${job.id}/files`, { signal });
    if (inputs.items.length) sections.push(fileList('Input files', inputs.items));
  } catch (error) {
    if (signal.aborted) return;
    sections.push(h('p', { class: 'muted' }, `Input files unavailable: ${error.message}`));
  }
  if (job.result_files.length) sections.push(fileList('Result files', job.result_files));
  if (job.workflow_id) sections.push(await workflowSteps(job, signal));
  fill(page.extras, sections);
}

function fileList(title, files) {
  return h('section', { class: 'card' }, h('h2', {}, title), h('ul', { class: 'files' }, files.map((file) => h('li', {},
    h('button', { type: 'button', class: 'link', onclick: () => download(file) }, file.name),
    ` ${file.size} bytes, SHA-256 `, h('span', { class: 'mono' }, file.sha256.slice(0, 16)), '…'))));
}

/** Downloads with the API key (a plain link could not send it). */
async function download(file) {
  try {
    const response = await fetch(file.url, { headers: apiKey() ? { Authorization: `Bearer ${apiKey()}` } : {} });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const url = URL.createObjectURL(await response.blob());
    const link = h('a', { href: url, download: file.name });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (error) {
    toast(`Download of ${file.name} failed: ${error.message}`, 'error');
  }
}

async function workflowSteps(job, signal) {
  try {
    const flow = await api(`/v1/workflows/${job.workflow_id}`, { signal });
    return h('section', { class: 'card' },
      h('h2', {}, `Workflow ${flow.name ?? ''} `, stateBadge(flow.state)),
      h('ul', { class: 'steps' }, (flow.steps || []).map((step) => h('li', {},
        h('a', { href: `#/jobs/${step.job_id}`, 'aria-current': step.job_id === job.id ? 'page' : null }, step.name),
        ' ', stateBadge(step.state),
        step.depends_on.length ? ` after ${step.depends_on.join(', ')}` : ''))));
  } catch (error) {
    return h('p', { class: 'muted' }, `Workflow unavailable: ${error.message}`);
  }
}

/** Cancel or retry, after asking; shows the outcome. */
async function act(action, job, then) {
  const cancel = action === 'cancel';
  const title = cancel ? 'Cancel this job?' : 'Retry this job?';
  const text = cancel
    ? (job.state === 'running' ? `The ${job.kind} job is asked to stop; it ends cancelled when its worker hears of it.` : `The ${job.kind} job ends cancelled and will not run.`)
    : `The ${job.kind} job runs again from attempt 0.`;
  if (!await confirmAction(title, text, cancel ? 'Cancel job' : 'Retry job')) return;
  try {
    const next = await api(`/v1/jobs/${job.id}${cancel ? '' : '/retry'}`, { method: cancel ? 'DELETE' : 'POST' });
    toast(cancel
      ? (next.state === 'cancelled' ? 'Job cancelled.' : 'Cancel requested; the job stops shortly.')
      : `Job retried: now ${next.state}.`);
    then(next);
  } catch (error) {
    toast(`${cancel ? 'Cancel' : 'Retry'} failed: ${error.message}`, 'error');
  }
}
