// The dashboard's entry: who is signed in, and which view the address names
// (#/queues, #/jobs?filter, #/jobs/ID).

import { ApiError, api, apiKey, setApiKey } from './api.js';
import { fill, h } from './dom.js';
import { jobView } from './job.js';
import { jobsView } from './jobs.js';
import { queuesView } from './queues.js';

const main = document.getElementById('main');
const session = { tenant: null, auth: false };
let current = null;

function route() {
  current?.abort();
  current = new AbortController();
  const [path, query = ''] = location.hash.replace(/^#/, '').split('?');
  const params = new URLSearchParams(query);
  const job = path.match(/^\/jobs\/([0-9a-fA-F-]{36})$/);
  const view = job ? 'jobs' : path === '/jobs' ? 'jobs' : 'queues';
  for (const link of document.querySelectorAll('[data-nav]')) {
    if (link.dataset.nav === view) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const signal = current.signal;
  if (job) jobView(main, signal, job[1]);
  else if (path === '/jobs') jobsView(main, signal, params);
  else queuesView(main, signal, session);
  document.title = `${view === 'jobs' ? (job ? 'Job' : 'Jobs') : 'Queues'} · Jobs dashboard`;
}

function showTenant() {
  const label = document.getElementById('tenant');
  label.textContent = session.auth ? `Tenant: ${session.tenant}` : `Tenant: ${session.tenant} (no API keys)`;
  document.getElementById('sign-out').hidden = !session.auth;
}

function signIn(message) {
  current?.abort();
  session.tenant = null;
  document.getElementById('tenant').textContent = '';
  document.getElementById('sign-out').hidden = true;
  const input = h('input', { id: 'api-key', name: 'key', type: 'password', required: true, autocomplete: 'off', spellcheck: 'false' });
  const status = h('p', { class: 'error', role: 'alert', id: 'sign-in-error' }, message || '');
  const form = h('form', { class: 'card sign-in', 'aria-labelledby': 'sign-in-title' },
    h('h1', { id: 'sign-in-title' }, 'Sign in'),
    h('p', {}, 'This API needs an API key. It is kept in this browser tab only, until the tab closes.'),
    h('div', { class: 'field' }, h('label', { for: 'api-key' }, 'API key'), input),
    status,
    h('button', { type: 'submit', class: 'primary', id: 'sign-in' }, 'Sign in'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    setApiKey(input.value.trim());
    await start();
  });
  fill(main, form);
  input.focus();
}

/** Asks the API who this is; signs in first when a key is needed. */
async function start() {
  try {
    const me = await api('/v1/me');
    Object.assign(session, me);
    if (!me.tenant) return signIn(apiKey() ? 'That key was refused.' : '');
    showTenant();
    route();
  } catch (error) {
    // A refused key has already asked for sign-in (see api.js).
    if (!(error instanceof ApiError && error.status === 401)) {
      fill(main, h('h1', {}, 'Jobs dashboard'), h('p', { class: 'error', role: 'alert' }, `The API did not answer: ${error.message}`),
        h('button', { type: 'button', onclick: start }, 'Try again'));
    }
  }
}

window.addEventListener('hashchange', () => {
  if (session.tenant) route();
});
window.addEventListener('jobs:signin', (event) => signIn(event.detail));
document.getElementById('sign-out').addEventListener('click', () => {
  setApiKey(null);
  signIn('Signed out.');
});
// Focus moves to the new view's heading, for keyboard and screen-reader users.
new MutationObserver(() => main.querySelector('h1[tabindex]')?.focus({ preventScroll: true }))
  .observe(main, { childList: true });
start();
