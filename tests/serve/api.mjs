// The JSON API of `invp serve` end to end: answers equal `invp --json query`; every bad request
// gets its 4xx (or, for an oversized body, a closed connection) and the next good request
// still succeeds; `index add` is picked up without a restart; an API key is enforced;
// SIGTERM finishes requests in flight and exits 0.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { execFile, execFileSync } from 'node:child_process';
import { startServer, stopped, cliHits, sameHits } from './common.mjs';

const [invp, idx, image, work] = process.argv.slice(2);
let failures = 0, checks = 0;
function check(name, ok, detail = '') {
  checks++;
  if (!ok) { failures++; console.log('FAIL: ' + name + (detail ? ' (' + detail + ')' : '')); }
}
async function call(url, path, init = {}) {
  const ctrl = AbortSignal.timeout(20000);
  try {
    const res = await fetch(url + path, { ...init, signal: ctrl });
    const type = res.headers.get('content-type') || '';
    const body = type.startsWith('application/json') ? await res.json() : Buffer.from(await res.arrayBuffer());
    return { status: res.status, body, type };
  } catch (e) {
    return { status: 0, error: String(e.cause || e) };  // a closed connection
  }
}
// A raw exchange over a socket: write PARTS (with pauses), read until the server closes or MS pass.
function raw(url, parts, ms) {
  const { port } = new URL(url);
  return new Promise((resolve) => {
    const s = net.connect(Number(port), '127.0.0.1');
    let got = '';
    const done = (how) => { clearTimeout(t); s.destroy(); resolve({ how, got }); };
    const t = setTimeout(() => done('timeout'), ms);
    s.on('data', (d) => { got += d; });
    s.on('close', () => done('closed'));
    s.on('error', () => done('error'));
    s.on('connect', async () => {
      for (const p of parts) {
        if (typeof p === 'number') await new Promise((r) => setTimeout(r, p));
        else if (p === 'destroy') return done('destroyed');
        else s.write(p);
      }
    });
  });
}

const png = (w, h) => {  // a PNG header that claims W×H pixels, with no real data behind it
  const b = Buffer.alloc(33);
  Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52]).copy(b);
  b.writeUInt32BE(w, 16); b.writeUInt32BE(h, 20); b[24] = 8; b[25] = 0;
  return b;
};

const img = readFileSync(image);
const { proc, url, stderr } = await startServer(invp, idx, ['--max-upload', '0.05', '--max-pixels', '10000', '--timeout', '1']);
const good = async (what) => {
  const r = await call(url, '/api/query?id=1&k=3');
  check('good request after ' + what, r.status === 200 && r.body.hits.length === 3, JSON.stringify(r.body || r.error));
};
try {
  // A second server on a port in use is refused (exit 1), not bound beside the first.
  const twin = await new Promise((resolve) => {
    const p = execFile(invp, ['-q', 'serve', '--index', idx, '--port', new URL(url).port], { timeout: 60000 },
                       (err) => resolve(err ? err.code : 0));
  });
  check('a port in use is an error', twin === 1, 'exit ' + twin);
  // ---- answers equal the CLI's -----------------------------------------------------------
  const h = await call(url, '/health');
  check('health', h.status === 200 && h.body.status === 'ok');
  const byImage = await call(url, '/api/query?k=5', { method: 'POST', body: img });
  check('query by raw image', byImage.status === 200, JSON.stringify(byImage.body));
  sameHits(byImage.body.hits, cliHits(invp, idx, [image], 5), 'image');
  const form = new FormData();
  form.append('image', new Blob([img]), 'img3.pgm');
  const byForm = await call(url, '/api/query?k=5', { method: 'POST', body: form });
  check('query by multipart', byForm.status === 200);
  sameHits(byForm.body.hits, cliHits(invp, idx, [image], 5), 'multipart');
  const byId = await call(url, '/api/query?id=7&k=4');
  sameHits(byId.body.hits, cliHits(invp, idx, ['--id', '7'], 4), 'id');
  check('default k is 10', (await call(url, '/api/query?id=7')).body.hits.length === 10);
  const cats = await call(url, '/api/categories?id=7&k=10');
  check('categories by id', cats.status === 200 && cats.body.categories[0].category === byId.body.hits[0].category,
        JSON.stringify(cats.body));
  const catsImg = await call(url, '/api/categories', { method: 'POST', body: img });
  check('categories by image', catsImg.status === 200 && catsImg.body.categories[0].category === 'class2');
  const prop = await call(url, '/api/propagation?id=7&k=3&hops=2');
  check('propagation hop by hop', prop.status === 200 && prop.body.hops.length === 2 && prop.body.anchor_id === 7,
        JSON.stringify(prop.body));
  // Filtered search: the same answer as the CLI's --filter, a bad filter is a 400.
  const filt = 'category=class0|class1,id!=3';
  const byFilter = await call(url, '/api/query?id=7&k=4&filter=' + encodeURIComponent(filt));
  check('filtered query', byFilter.status === 200 && byFilter.body.filter === filt, JSON.stringify(byFilter.body));
  sameHits(byFilter.body.hits, cliHits(invp, idx, ['--id', '7', '--filter', filt], 4), 'filter');
  check('filtered hits are admitted', byFilter.body.hits.every((x) => /class[01]/.test(x.category) && x.id !== 3));
  const filtImg = await call(url, '/api/query?k=3&filter=' + encodeURIComponent('category=class0'), { method: 'POST', body: img });
  check('filtered image query', filtImg.status === 200 && filtImg.body.hits.every((x) => x.category === 'class0'));
  const few = await call(url, '/api/query?id=7&k=5&filter=id%3D1..2');
  check('fewer matches than k: a note', few.status === 200 && few.body.hits.length === 2 && /only 2 items/.test(few.body.note),
        JSON.stringify(few.body));
  for (const f of ['colour=red', 'category=Hat', 'id=9..1']) {
    const r = await call(url, '/api/query?id=7&filter=' + encodeURIComponent(f));
    check('bad filter ' + f + ' -> 400 with a JSON error', r.status === 400 && typeof r.body.error === 'string', JSON.stringify(r.body));
  }
  const info = await call(url, '/api/info');
  check('info', info.status === 200 && info.body.size === 48 && info.body.model && info.body.index.recipe !== undefined);
  const pic = await call(url, '/api/image/7');
  check('image is a PNG', pic.status === 200 && pic.type === 'image/png' && pic.body.subarray(1, 4).toString() === 'PNG');

  // ---- every bad request gets its 4xx, and the next good one still works ---------------
  const bad = [
    ['body over --max-upload', '/api/query', { method: 'POST', body: Buffer.alloc(80000, 7) }, [413, 0]],
    ['truncated image', '/api/query', { method: 'POST', body: img.subarray(0, 20) }, [422]],
    ['not an image', '/api/query', { method: 'POST', body: Buffer.from('hello, not a picture') }, [422]],
    ['hostile PNG header (2^30 px)', '/api/query', { method: 'POST', body: png(32768, 32768) }, [413, 422]],
    ['decoded image over the pixel cap', '/api/query', { method: 'POST', body: Buffer.concat([Buffer.from('P5\n200 200\n255\n'), Buffer.alloc(40000, 90)]) }, [413]],
    ['empty body', '/api/query', { method: 'POST', body: '' }, [400]],
    ['unknown id', '/api/query?id=4800', {}, [404]],
    ['unknown id image', '/api/image/4800', {}, [404]],
    ['negative k', '/api/query?id=1&k=-1', {}, [400]],
    ['zero k', '/api/query?id=1&k=0', {}, [400]],
    ['huge k', '/api/query?id=1&k=99999999999', {}, [400]],
    ['k not a number', '/api/query?id=1&k=ten', {}, [400]],
    ['negative id', '/api/query?id=-3', {}, [400]],
    ['huge id', '/api/query?id=123456789012345678901234', {}, [400]],
    ['non-ASCII id', '/api/query?id=%C3%A9', {}, [400]],
    ['non-ASCII parameter name', '/api/query?%C3%A9=1&id=1', {}, [400]],
    ['../ in a parameter', '/api/query?id=..%2F..%2Fetc%2Fpasswd', {}, [400]],
    ['../ in the image path', '/api/image/..%2F..%2Fetc%2Fpasswd', {}, [400, 404]],
    ['GET query without id', '/api/query', {}, [400]],
    ['unknown endpoint', '/api/nothing', {}, [404]],
    ['multipart without image field', '/api/query', { method: 'POST', body: (() => { const f = new FormData(); f.append('other', 'x'); return f; })() }, [400]],
    ['malformed multipart', '/api/query', { method: 'POST', headers: { 'Content-Type': 'multipart/form-data; boundary=XYZ' }, body: '--XYZ\r\nContent-Disposition: form-data; name="image"\r\n\r\nabc' }, [400]],
    ['propagation hops out of range', '/api/propagation?id=1&hops=99', {}, [400]],
  ];
  for (const [name, path, init, want] of bad) {
    const r = await call(url, path, init);
    check(name + ' -> ' + want.join('|'), want.includes(r.status), 'got ' + r.status + ' ' + JSON.stringify(r.body || r.error));
    if (r.status >= 400) check(name + ' answers a JSON error', r.body && typeof r.body.error === 'string' && r.body.error.length > 0);
    await good(name);
  }
  // A client that sends slowly is dropped after --timeout; one that disconnects mid-body too.
  const slow = await raw(url, ['GET /api/query?id=1 HTTP/1.1\r\nHo', 3000, 'st: x\r\n\r\n'], 6000);
  // After --timeout the server gives up on the request: it closes, or answers 4xx to what it got.
  check('slow client is dropped', !slow.got.includes('"hits"') && (slow.how === 'closed' || /^HTTP\/1\.1 4\d\d/.test(slow.got)),
        slow.how + ' ' + slow.got.slice(0, 200));
  await good('slow client');
  const cut = await raw(url, ['POST /api/query HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n', img.subarray(0, 10), 100, 'destroy'], 3000);
  check('mid-body disconnect', cut.how === 'destroyed');
  await good('mid-body disconnect');
  const met = await call(url, '/metrics');
  const text = met.body.toString();
  check('metrics in Prometheus text', met.status === 200 && /invp_http_requests_total\{route="query"\} \d+/.test(text) &&
        /invp_http_errors_total\{route="query",class="4xx"\} [1-9]/.test(text) && text.includes('invp_http_request_duration_seconds_bucket{le="+Inf"}') &&
        text.includes('invp_queue_depth'));

  // ---- index add: the server switches generation between requests ----------------------
  const before = (await call(url, '/health')).body.generation;
  const load = [];  // requests in flight while the new generation is committed
  for (let i = 0; i < 20; i++) load.push(call(url, '/api/query?id=' + (i % 48) + '&k=3'));
  execFileSync(invp, ['-q', 'index', 'add', '--index', idx, work + '/more']);
  let after = before;
  for (let i = 0; i < 100 && after === before; i++) {
    await new Promise((r) => setTimeout(r, 100));
    after = (await call(url, '/health')).body.generation;
  }
  check('new generation served', after === before + 1, `${before} -> ${after}`);
  check('no request dropped during the switch', (await Promise.all(load)).every((r) => r.status === 200));
  const fresh = await call(url, '/api/query?id=49&k=3');
  check('added item found', fresh.status === 200);
  sameHits(fresh.body.hits, cliHits(invp, idx, ['--id', '49'], 3), 'id after add');

  // ---- SIGTERM drains in-flight requests and exits 0 -----------------------------------
  const inflight = [];
  for (let i = 0; i < 8; i++) inflight.push(call(url, '/api/query?k=5', { method: 'POST', body: img }));
  await new Promise((r) => setTimeout(r, 30));
  proc.kill('SIGTERM');
  const answers = await Promise.all(inflight);
  check('requests in flight at SIGTERM answered', answers.every((r) => r.status === 200 || r.status === 0) &&
        answers.some((r) => r.status === 200), answers.map((r) => r.status).join(','));
  check('SIGTERM exits 0', (await stopped(proc)) === 0, stderr());
} catch (e) {
  failures++;
  console.log('FAIL: ' + (e.stack || e));
  proc.kill('SIGKILL');
}

// ---- an API key is enforced on /api and /metrics, not on /health ----------------------
const keyed = await startServer(invp, idx, [], { INVP_API_KEY: 'sesame' });
try {
  check('no key: 401', (await call(keyed.url, '/api/query?id=1')).status === 401);
  check('wrong key: 401', (await call(keyed.url, '/api/query?id=1', { headers: { Authorization: 'Bearer nope' } })).status === 401);
  check('metrics need the key', (await call(keyed.url, '/metrics')).status === 401);
  check('health needs no key', (await call(keyed.url, '/health')).status === 200);
  check('right key: 200', (await call(keyed.url, '/api/query?id=1', { headers: { Authorization: 'Bearer sesame' } })).status === 200);
} finally {
  keyed.proc.kill('SIGINT');
  check('Ctrl-C exits 0', (await stopped(keyed.proc)) === 0);
}
console.log(`${checks - failures}/${checks} checks passed`);
process.exit(failures ? 1 : 0);
