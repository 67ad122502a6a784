// Load benchmark of `invp serve` (loopback only, bounded in time and requests per cell):
// queries/s and p50/p99 latency at 1, 4, 16 and 64 concurrent clients, by image upload and by
// id, against `invp query --serve` (c lines outstanding on its stdin; c = 1 is one request at
// a time) and one-shot `invp query` processes (c at a time, capped at 4: each loads the index
// and model, and 16 or 64 of them at once would not fit beside other work in memory).
// Usage: node bench/bench_http.mjs INVP INDEX_DIR IMAGE... [--seconds S] [--max N] [--soak S]
import http from 'node:http';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';

const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); if (i < 0) return dflt; const v = Number(args[i + 1]); args.splice(i, 2); return v; };
const SECONDS = opt('--seconds', 4), MAX = opt('--max', 2000), SOAK = opt('--soak', 0);
const [invp, idx, ...images] = args;
if (!images.length) { console.error('usage: bench_http.mjs INVP INDEX_DIR IMAGE... [--seconds S] [--max N] [--soak S]'); process.exit(2); }
const bodies = images.map((p) => readFileSync(p));
const LEVELS = [1, 4, 16, 64], K = 10;
const now = () => Number(process.hrtime.bigint()) / 1e6;
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p * s.length))]; };
const rss = (pid) => { try { return Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]) / 1024; } catch { return NaN; } };

// C clients, each with one request outstanding, until SECONDS or MAX requests.
async function closedLoop(c, send) {
  const lat = [];
  let n = 0, errors = 0;
  const t0 = now(), end = t0 + SECONDS * 1000;
  await Promise.all(Array.from({ length: c }, async () => {
    while (now() < end && n < MAX) {
      const i = n++;
      const t = now();
      try { await send(i); lat.push(now() - t); } catch { errors++; }
    }
  }));
  const secs = (now() - t0) / 1000;
  return { qps: lat.length / secs, p50: pct(lat, 0.5), p99: pct(lat, 0.99), n: lat.length, errors };
}

function startServer() {
  return new Promise((resolve, reject) => {
    const p = spawn(invp, ['-q', 'serve', '--index', idx, '--port', '0', '--workers', '64'], { stdio: ['ignore', 'pipe', 'inherit'] });
    p.stdout.on('data', (d) => { const m = String(d).match(/(http:\/\/127\.0\.0\.1:\d+)/); if (m) resolve({ p, url: new URL(m[1]) }); });
    p.on('exit', (c) => reject(new Error('serve exited ' + c)));
  });
}
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
function request(url, path, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: url.port, path, method: body ? 'POST' : 'GET', agent,
                               headers: body ? { 'Content-Type': 'application/octet-stream', 'Content-Length': body.length } : {} }, (res) => {
      let n = 0;
      res.on('data', (d) => { n += d.length; });
      res.on('end', () => (res.statusCode === 200 ? resolve(n) : reject(new Error('HTTP ' + res.statusCode))));
    });
    req.setTimeout(30000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

// `query --serve`: one process, c lines in flight on its stdin, answers in order.
function startLineServer() {
  const p = spawn(invp, ['-q', 'query', '--index', idx, '--serve', '-k', String(K)], { stdio: ['pipe', 'pipe', 'inherit'] });
  let buf = '';
  const waiting = [];
  p.stdout.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) { buf = buf.slice(nl + 1); const w = waiting.shift(); if (w) w(); }
  });
  return { p, ask: (line) => new Promise((resolve) => { waiting.push(resolve); p.stdin.write(line + '\n'); }) };
}
function oneShot(args) {
  return new Promise((resolve, reject) => {
    const p = spawn(invp, ['-q', '--json', 'query', '--index', idx, ...args, '-k', String(K)], { stdio: ['ignore', 'ignore', 'inherit'] });
    p.on('exit', (c) => (c === 0 ? resolve() : reject(new Error('exit ' + c))));
  });
}

const rows = [];
const row = (target, mode, c, r) => {
  rows.push({ target, mode, c, ...r });
  console.log(`${target.padEnd(16)} ${mode.padEnd(6)} c=${String(c).padStart(2)}  ${r.qps.toFixed(1).padStart(8)} q/s  p50 ${r.p50.toFixed(1).padStart(7)} ms  p99 ${r.p99.toFixed(1).padStart(7)} ms  (${r.n} ok, ${r.errors} errors)`);
};
const ids = (i) => (i * 7919) % 50000;
console.log(`bench_http: ${idx}, ${images.length} images, k=${K}, ${SECONDS} s or ${MAX} requests a cell, INVP_THREADS=${process.env.INVP_THREADS || 'default'}, ${os.cpus()[0].model}, ${os.cpus().length} cores`);

const srv = await startServer();
for (let i = 0; i < 20; i++) await request(srv.url, '/api/query?k=10', bodies[i % bodies.length]);  // warm-up
const rssStart = rss(srv.p.pid);
for (const c of LEVELS) row('serve (HTTP)', 'image', c, await closedLoop(c, (i) => request(srv.url, '/api/query?k=' + K, bodies[i % bodies.length])));
for (const c of LEVELS) row('serve (HTTP)', 'id', c, await closedLoop(c, (i) => request(srv.url, `/api/query?id=${ids(i)}&k=${K}`)));
if (SOAK > 0) {
  const r = await closedLoopFor(SOAK);
  console.log(`soak ${SOAK} s at 16 clients by image: ${r.n} queries, ${r.qps.toFixed(1)} q/s; RSS ${rssStart.toFixed(0)} MiB after warm-up, ${rss(srv.p.pid).toFixed(0)} MiB at the end`);
}
console.log(`serve RSS: ${rssStart.toFixed(0)} MiB after warm-up, ${rss(srv.p.pid).toFixed(0)} MiB after the cells`);
const metrics = await new Promise((resolve) => http.get({ host: '127.0.0.1', port: srv.url.port, path: '/metrics', agent }, (res) => { let t = ''; res.on('data', (d) => { t += d; }); res.on('end', () => resolve(t)); }));
const batches = Number((metrics.match(/^invp_engine_batches (\S+)$/m) || [])[1]);
console.log(`engine batches: ${batches} for ${rows.reduce((a, r) => a + r.n, 0) + 20} queries`);
srv.p.kill('SIGTERM');

const ls = startLineServer();
await ls.ask(images[0]);  // start-up
for (const c of LEVELS) row('query --serve', 'image', c, await closedLoop(c, (i) => ls.ask(images[i % images.length])));
for (const c of LEVELS) row('query --serve', 'id', c, await closedLoop(c, (i) => ls.ask('id:' + ids(i))));
ls.p.stdin.end();

for (const c of [1, 4]) row('one-shot query', 'image', c, await closedLoop(c, (i) => oneShot([images[i % images.length]])));
for (const c of [1, 4]) row('one-shot query', 'id', c, await closedLoop(c, (i) => oneShot(['--id', String(ids(i))])));

async function closedLoopFor(seconds) {
  const lat = [];
  const t0 = now(), end = t0 + seconds * 1000;
  let n = 0, errors = 0;
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (now() < end) { const t = now(); try { await request(srv.url, '/api/query?k=10', bodies[n++ % bodies.length]); lat.push(now() - t); } catch { errors++; } }
  }));
  return { n: lat.length, qps: lat.length / ((now() - t0) / 1000), errors };
}
const base = rows.find((r) => r.target === 'query --serve' && r.mode === 'image' && r.c === 1);
const at16 = rows.find((r) => r.target === 'serve (HTTP)' && r.mode === 'image' && r.c === 16);
const id16 = rows.find((r) => r.target === 'serve (HTTP)' && r.mode === 'id' && r.c === 16);
console.log(`serve by image at 16 clients: ${(at16.qps / base.qps).toFixed(2)}x the queries/s of query --serve one at a time; p99 by id at 16 clients ${id16.p99.toFixed(1)} ms`);
agent.destroy();
