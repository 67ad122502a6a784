// Shared by the serve tests: start `invp serve` on an ephemeral 127.0.0.1 port, ask the CLI
// for the oracle answer, compare hit lists. Every wait here is bounded.
import { spawn, execFileSync } from 'node:child_process';

export function startServer(invp, idx, extra = [], env = {}) {
  return new Promise((resolve, reject) => {
    const proc = spawn(invp, ['serve', '--index', idx, '--port', '0', ...extra],
                       { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error('server did not start in 60 s: ' + err)); }, 60000);
    proc.stderr.on('data', (d) => { err += d; });
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/^(http:\/\/127\.0\.0\.1:\d+)\/\n/);
      if (m) { clearTimeout(timer); resolve({ proc, url: m[1], stderr: () => err }); }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error('server exited ' + code + ': ' + err)); });
  });
}

export function stopped(proc, ms = 20000) {
  return new Promise((resolve, reject) => {
    if (proc.exitCode !== null) return resolve(proc.exitCode);
    const t = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error('server did not stop in time')); }, ms);
    proc.on('exit', (code) => { clearTimeout(t); resolve(code); });
  });
}

// The hits `invp --json query` gives for ARGS (an image path or --id N): the oracle.
export function cliHits(invp, idx, args, k) {
  const out = execFileSync(invp, ['-q', '--json', 'query', '--index', idx, ...args, '-k', String(k)],
                           { env: { ...process.env, INVP_THREADS: '1' } });
  return JSON.parse(out).results[0].hits;
}

export function sameHits(got, want, what) {
  if (!Array.isArray(got) || got.length !== want.length)
    throw new Error(`${what}: ${got && got.length} hits, the CLI gives ${want.length}`);
  want.forEach((w, i) => {
    const g = got[i];
    for (const key of ['rank', 'id', 'label', 'path', 'category'])
      if (g[key] !== w[key]) throw new Error(`${what}: hit ${i} ${key} ${g[key]} != CLI ${w[key]}`);
    if (Math.abs(g.score - w.score) > 1e-5) throw new Error(`${what}: hit ${i} score ${g.score} != CLI ${w.score}`);
  });
}
