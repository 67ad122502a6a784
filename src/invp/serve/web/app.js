// The page of `invp serve`: plain browser JavaScript, no framework, no network but this server.
// Only the hits on screen are fetched, so a collection of any size browses the same.
'use strict';
const $ = (s) => document.querySelector(s);
let apiKey = sessionStorage.getItem('invp-key') || '';
let last = null;  // the last query, to repeat it after an API key is entered

function status(text, error) {
  const s = $('#status');
  s.textContent = text;
  s.classList.toggle('error', !!error);
}

async function api(path, init = {}) {
  init.headers = Object.assign({}, init.headers, apiKey ? { Authorization: 'Bearer ' + apiKey } : {});
  const res = await fetch(path, init);
  if (res.status === 401) { $('#auth').hidden = false; throw new Error('this server needs an API key'); }
  const type = res.headers.get('Content-Type') || '';
  const body = type.startsWith('application/json') ? await res.json() : null;
  if (!res.ok) throw new Error((body && body.error) || ('HTTP ' + res.status));
  return body;
}

// A thumbnail of an indexed item. With an API key the PNG is fetched with the header.
function thumb(id) {
  const img = document.createElement('img');
  img.alt = 'item ' + id;
  img.loading = 'lazy';
  if (!apiKey) img.src = '/api/image/' + id;
  else fetch('/api/image/' + id, { headers: { Authorization: 'Bearer ' + apiKey } })
    .then((r) => r.blob()).then((b) => { img.src = URL.createObjectURL(b); });
  return img;
}

function renderHits(query, hits) {
  const grid = $('#hits');
  grid.replaceChildren();
  for (const h of hits) {
    const b = document.createElement('button');
    b.className = 'hit';
    b.type = 'button';
    b.dataset.id = h.id;
    b.title = h.path;
    b.append(thumb(h.id));
    const meta = document.createElement('div');
    meta.className = 'meta';
    meta.innerHTML = '<span>#' + h.rank + '</span><span class="score"></span>';
    meta.querySelector('.score').textContent = h.score.toFixed(3);
    const cat = document.createElement('div');
    cat.className = 'cat';
    cat.textContent = (h.category || (h.label >= 0 ? 'label ' + h.label : '')) + ' · id ' + h.id;
    b.append(meta, cat);
    b.addEventListener('click', () => searchId(h.id));
    grid.append(b);
  }
  grid.dataset.query = query;
  $('#hits-title').textContent = hits.length + ' hits for ' + query;
}

function renderCategories(list) {
  const ol = $('#categories');
  ol.replaceChildren();
  for (const c of list.slice(0, 6)) {
    const li = document.createElement('li');
    const name = document.createElement('span');
    name.textContent = c.category || ('label ' + c.label);
    const bar = document.createElement('span');
    bar.className = 'bar';
    bar.innerHTML = '<span></span>';
    bar.firstChild.style.width = (100 * c.vote).toFixed(1) + '%';
    const pct = document.createElement('span');
    pct.textContent = (100 * c.vote).toFixed(0) + ' %';
    li.append(name, bar, pct);
    ol.append(li);
  }
}

function renderPropagation(p) {
  const box = $('#propagation');
  box.replaceChildren();
  p.hops.forEach((hop, i) => {
    const row = document.createElement('div');
    row.className = 'row';
    const title = document.createElement('b');
    title.textContent = 'hop ' + (i + 1) + ': ' + hop.length + ' items';
    const tiles = document.createElement('div');
    tiles.className = 'tiles';
    for (const h of hop.slice(0, 16)) {
      const b = document.createElement('button');
      b.className = 'hop';
      b.type = 'button';
      b.title = (h.category || '') + ' id ' + h.id;
      b.append(thumb(h.id));
      b.addEventListener('click', () => searchId(h.id));
      tiles.append(b);
    }
    row.append(title, tiles);
    box.append(row);
  });
}

async function run(query, path, init, side) {
  last = { query, path, init, side };
  status('searching…');
  const t0 = performance.now();
  try {
    const r = await api(path + filterParam(), init);
    renderHits(query, r.hits);
    status(r.hits.length + ' hits in ' + Math.round(performance.now() - t0) + ' ms' + (r.note ? ' (' + r.note + ')' : ''));
  } catch (e) {
    status(e.message, true);
    return;
  }
  // The side panels are extras: their failure (an unlabelled index) leaves the hits alone.
  api(side.categories, side.init()).then((c) => renderCategories(c.categories)).catch(() => $('#categories').replaceChildren());
  if (side.propagation) api(side.propagation, side.init()).then(renderPropagation).catch(() => {});
}

function k() { return $('#k').value; }
// The filter box as a query parameter ('' when empty); the server checks the expression.
function filterParam() {
  const f = $('#filter').value.trim();
  return f ? '&filter=' + encodeURIComponent(f) : '';
}

function searchId(id) {
  $('#id').value = id;
  $('#query-preview').hidden = false;
  $('#query-preview').replaceWith(Object.assign(thumb(id), { id: 'query-preview' }));
  $('#drop-text').textContent = 'item ' + id + ' (drop another image to search by it)';
  run('id ' + id, '/api/query?id=' + id + '&k=' + k(), {},
      { categories: '/api/categories?id=' + id, propagation: '/api/propagation?id=' + id, init: () => ({}) });
}

function searchFile(file) {
  if (!file) return;
  const url = URL.createObjectURL(file);
  const prev = $('#query-preview');
  prev.src = url;
  prev.hidden = false;
  $('#drop-text').textContent = file.name;
  const post = () => ({ method: 'POST', body: file, headers: { 'Content-Type': 'application/octet-stream' } });
  run('upload ' + file.name, '/api/query?k=' + k(), post(),
      { categories: '/api/categories', propagation: '/api/propagation', init: post });
}

async function facts() {
  try {
    const i = await api('/api/info');
    const x = i.index || {}, m = i.model || null, a = (m && m.arch) || {}, meas = x.measured || {};
    const model = !m ? 'none (search by id)'
      : (a.family || 'model') + '-' + (a.depth || '?') + ' w' + (a.width || '?') + ', ' + (m.dim || x.dim) + '-d, ' +
        ((m.input && m.input.channels) === 1 ? 'grey ' : '') + ((m.input && m.input.size) || '?') + ' px';
    const bits = [
      [(i.size || 0).toLocaleString(), 'items'],
      [(x.recipe && x.recipe.name) || '?', 'recipe (' + (x.factory || '') + ')'],
      [meas.recall_at_k ? (100 * meas.recall_at_k).toFixed(1) + ' %' : 'n/a', 'recall@' + (meas.k || 10)],
      [model, 'model'],
      [(i.categories || []).length, 'categories'],
      [i.generation, 'generation'],
    ];
    $('#filter-choices').replaceChildren(...(i.categories || []).map((c) =>
      Object.assign(document.createElement('option'), { value: 'category=' + c })));
    $('#facts').replaceChildren(...bits.map(([v, k]) => {
      const s = document.createElement('span');
      s.innerHTML = '<b></b> ';
      s.firstChild.textContent = v;
      s.append(k + '  ');
      return s;
    }));
  } catch (e) {
    $('#facts').textContent = e.message;
  }
}

const drop = $('#drop');
['dragenter', 'dragover'].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add('over'); }));
['dragleave', 'drop'].forEach((t) => drop.addEventListener(t, () => drop.classList.remove('over')));
drop.addEventListener('drop', (e) => { e.preventDefault(); searchFile(e.dataTransfer.files[0]); });
$('#file').addEventListener('change', (e) => searchFile(e.target.files[0]));
$('#by-id').addEventListener('submit', (e) => {
  e.preventDefault();
  const v = $('#id').value.trim();
  if (!/^[0-9]{1,15}$/.test(v)) return status('an id is a whole number', true);
  searchId(Number(v));
});
// A new filter re-runs the current search (Enter or leaving the box).
$('#filter').addEventListener('change', () => { if (last) run(last.query, last.path, last.init, last.side); });
$('#auth').addEventListener('submit', (e) => {
  e.preventDefault();
  apiKey = $('#key').value;
  sessionStorage.setItem('invp-key', apiKey);
  $('#auth').hidden = true;
  facts();
  if (last) run(last.query, last.path, last.init, last.side);
});
facts();
