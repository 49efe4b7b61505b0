// The /v1 HTTP API, the page's only source of data. The API key lives in sessionStorage
// (this tab, until it closes); a 401 clears it and asks for it again.

const KEY = 'jobs.apiKey';

export class ApiError extends Error {
  constructor(status, problem) {
    super(problemText(status, problem));
    this.status = status;
    this.problem = problem;
  }
}

function problemText(status, problem) {
  if (!problem) return `HTTP ${status}`;
  const fields = (problem.errors || []).map((e) => `${e.field}: ${e.message}`).join('; ');
  return [problem.title, problem.detail, fields].filter(Boolean).join(' — ');
}

export function apiKey() {
  return sessionStorage.getItem(KEY);
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

/** Tells the page the key was refused: it shows the sign-in again. */
function refused() {
  setApiKey(null);
  window.dispatchEvent(new CustomEvent('jobs:signin', { detail: 'Your API key was refused. Sign in again.' }));
}

/** A request to the API; resolves to the JSON body, or throws an `ApiError`. */
export async function api(path, { method = 'GET', body, signal } = {}) {
  const init = { method, signal, headers: headers({ Accept: 'application/json' }) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => null);
  if (response.status === 401) refused();
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** `/v1/jobs?state=...` from an object, leaving out empty values. */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') query.set(name, value);
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

/**
 * Follows a job's Server-Sent Events until the job ends, `signal` aborts, or the stream
 * breaks (then it reconnects after a pause). `EventSource` cannot send the API key, so
 * the stream is read with fetch and parsed here.
 */
export async function watchJob(id, onJob, signal) {
  while (!signal.aborted) {
    try {
      const ended = await readEvents(`/v1/jobs/${encodeURIComponent(id)}/events`, onJob, signal);
      if (ended) return;
    } catch (error) {
      if (signal.aborted || (error instanceof ApiError && error.status < 500 && error.status !== 429)) return;
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

/** One connection: true once the job's last event (an ended state) was read. */
async function readEvents(path, onJob, signal) {
  const response = await fetch(path, { headers: headers({ Accept: 'text/event-stream' }), signal });
  if (response.status === 401) refused();
  if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let ended = false;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return ended;
    buffer += value.replace(/\r\n?/g, '\n');
    let cut;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const job = jobOfFrame(buffer.slice(0, cut));
      buffer = buffer.slice(cut + 2);
      if (job) {
        ended = ENDED.includes(job.state);
        onJob(job);
      }
    }
  }
}

export const ENDED = ['completed', 'partial', 'failed', 'cancelled'];

/** The JobView of a `job` event; null for comments and other events. */
function jobOfFrame(frame) {
  let event = 'message';
  const data = [];
  for (const line of frame.split('\n')) {
    if (line === '' || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  return event === 'job' && data.length ? JSON.parse(data.join('\n')) : null;
}
