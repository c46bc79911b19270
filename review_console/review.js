// The review page: one item at a time, the keyboard first (Argilla's conventions as the
// anchor). Chat content goes in with textContent only, never as markup.
const CSRF = document.querySelector('meta[name=csrf]').content;
const KEYS = '3456789abcdefghijklmopqrtvwxyz';  // category keys (not 1, 2, n, s, u)
let item = null, label = null, cats = new Set();
const $ = (id) => document.getElementById(id);
const status = (t) => { $('status').textContent = t; };

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function render(it) {
  item = it; label = null; cats = new Set();
  const box = $('item'); box.replaceChildren();
  box.dataset.flaggedId = it ? it.flagged_id : '';
  if (!it) { box.append(el('p', {id: 'empty'}, 'Nothing left to review here.')); return; }
  const v = it.verdict;
  box.append(el('p', {id: 'meta'},
    `${it.reasons.join(', ')} · model said ${v.verdict} (p_unsafe ${Number(v.p_unsafe).toFixed(3)})` +
    ` · ${(v.categories || []).map(c => c.code + ' ' + c.name).join(', ') || 'no category'}` +
    ` · policy ${v.policy_id} · ${v.model_name} v${v.model_version}` + (v.tenant ? ` · tenant ${v.tenant}` : '')));
  if (it.detail) box.append(el('p', {}, 'Not judged whole: ' + it.detail));
  for (const t of it.context) {
    const d = el('div', {class: 'turn'}); d.append(el('div', {class: 'role'}, t.role));
    d.append(document.createTextNode(t.content)); box.append(d);
  }
  const j = el('div', {class: 'turn judged', id: 'judged'});
  j.append(el('div', {class: 'role'}, it.turn.role + ' · judged'));
  j.append(document.createTextNode(it.turn.content));
  if (it.content_truncated) j.append(el('div', {class: 'role'}, '(cut to fit the record)'));
  box.append(j);
  const labels = el('p', {});
  labels.append(el('span', {class: 'label', id: 'safe'}, '1 safe'), ' ',
                el('span', {class: 'label', id: 'unsafe'}, '2 unsafe'));
  box.append(labels);
  const cl = el('p', {id: 'cats'});
  it.policy_categories.forEach((c, i) => {
    const k = KEYS[i] || '';
    const b = el('span', {class: 'cat', 'data-code': c.code, 'data-key': k}, `${k} ${c.code} ${c.name}`);
    b.onclick = () => toggle(c.code); cl.append(b);
  });
  box.append(cl);
  const note = el('textarea', {id: 'note', rows: 2, cols: 60, placeholder: 'note (N to write, Esc to leave)'});
  box.append(note);
  if (it.your_decision) status('You decided this before: ' + it.your_decision.label + '. A new decision replaces it.');
  else status('');
  paint();
}

function paint() {
  $('safe').classList.toggle('on', label === 'safe');
  $('unsafe').classList.toggle('on', label === 'unsafe');
  for (const b of document.querySelectorAll('.cat')) b.classList.toggle('on', cats.has(b.dataset.code));
}

function toggle(code) {
  if (cats.has(code)) cats.delete(code); else cats.add(code);
  if (cats.size) label = 'unsafe';
  paint();
}

async function call(method, url, body) {
  const r = await fetch(url, {method, headers: {'content-type': 'application/json', 'x-csrf-token': CSRF},
                              body: body ? JSON.stringify(body) : undefined});
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

async function next() {
  const p = new URLSearchParams(QUERY);
  const only = p.get('item'); p.delete('item');
  const data = only ? await call('GET', '/api/items/' + encodeURIComponent(only))
                    : await call('GET', '/api/next?' + p.toString());
  if (only) history.replaceState(null, '', '/review?' + p.toString());
  render(data.item);
}

async function submit() {
  if (!item) return;
  if (!label) { status('Choose 1 (safe) or 2 (unsafe) first.'); return; }
  if (label === 'unsafe' && !cats.size) { status('An unsafe decision needs a category.'); return; }
  const body = {label, categories: label === 'unsafe' ? [...cats] : [], note: $('note').value, attempt: item.attempt};
  try {
    await call('POST', `/api/items/${encodeURIComponent(item.flagged_id)}/decision`, body);
    status('Saved.');
    await next();
  } catch (e) { status('Not saved: ' + e.message); }
}

document.addEventListener('keydown', async (e) => {
  if (e.target instanceof HTMLTextAreaElement) { if (e.key === 'Escape') e.target.blur(); return; }
  if (e.ctrlKey || e.metaKey || e.altKey || !item && e.key.toLowerCase() !== 'u') return;
  const k = e.key.toLowerCase();
  if (k === '1') { label = 'safe'; cats = new Set(); paint(); }
  else if (k === '2') { label = 'unsafe'; paint(); }
  else if (k === 'enter') { e.preventDefault(); await submit(); }
  else if (k === 's') { await call('POST', `/api/items/${encodeURIComponent(item.flagged_id)}/skip`); await next(); }
  else if (k === 'u') { const d = await call('POST', '/api/undo'); if (d.item) render(d.item); else status('Nothing to undo.'); }
  else if (k === 'n') { e.preventDefault(); $('note').focus(); }
  else { const i = KEYS.indexOf(k); if (i >= 0 && item.policy_categories[i]) toggle(item.policy_categories[i].code); }
});
next().catch((e) => status('Could not load: ' + e.message));
