// Small DOM helpers: building elements, the confirmation dialog, the status region and
// the formats of times, ages and durations. No innerHTML anywhere: text is text.

/** An element with attributes (`class`, `for`, `data-*`, `on*` handlers) and children. */
export function h(tag, attrs = {}, ...children) {
  const svg = ['svg', 'g', 'rect', 'polyline', 'line', 'text', 'tspan', 'title', 'path'].includes(tag);
  const el = svg
    ? document.createElementNS('http://www.w3.org/2000/svg', tag)
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'value' && 'value' in el && !svg) el.value = value;
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Asks before an action, in the page's dialog; resolves true when confirmed. */
export function confirmAction(title, text, okLabel) {
  const dialog = document.getElementById('confirm');
  const ok = document.getElementById('confirm-ok');
  const back = document.getElementById('confirm-back');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  ok.textContent = okLabel;
  const opener = document.activeElement;
  return new Promise((resolve) => {
    const done = (answer) => {
      ok.removeEventListener('click', yes);
      back.removeEventListener('click', no);
      dialog.removeEventListener('cancel', no);
      if (dialog.open) dialog.close();
      if (opener instanceof HTMLElement && opener.isConnected) opener.focus();
      resolve(answer);
    };
    const yes = () => done(true);
    const no = (event) => { event.preventDefault(); done(false); };
    ok.addEventListener('click', yes);
    back.addEventListener('click', no);
    dialog.addEventListener('cancel', no);
    dialog.showModal();
    back.focus();
  });
}

/** Shows the result of an action in the live region; errors stay until dismissed. */
export function toast(text, kind = 'ok') {
  const region = document.getElementById('toasts');
  const close = h('button', { type: 'button', class: 'link', 'aria-label': 'Dismiss' }, '×');
  const item = h('div', { class: `toast ${kind}`, 'data-kind': kind }, h('span', {}, text), close);
  close.addEventListener('click', () => item.remove());
  region.append(item);
  if (kind !== 'error') setTimeout(() => item.remove(), 8000);
}

/** `2026-12-04 16:20:05` (UTC) from an RFC 3339 instant; empty for none. */
export function when(iso) {
  if (!iso) return '';
  return new Date(iso).toISOString().replace('T', ' ').slice(0, 19);
}

/** `1.2 s`, `3 min 4 s`, `2 h 5 min` from milliseconds. */
export function duration(ms) {
  if (ms === null || ms === undefined) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.floor(s % 60)} s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ${m % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

/** Pretty JSON for a `<pre>`. */
export function json(value) {
  return JSON.stringify(value, null, 2);
}

/** A state as a badge. */
export function stateBadge(state, extra = {}) {
  return h('span', { class: `badge state-${state}`, ...extra }, state);
}
