// The web page of `invp serve` in a real headless Chromium (Debian's, driven by puppeteer-core):
// the page loads with the index facts, an image uploaded through its file input brings the
// hits `invp --json query` gives, rendered as thumbnails; clicking a hit searches from it and
// shows the new grid (equal to `invp --json query --id`). With a 5th argument it also saves a
// screenshot there (docs/serve-page.png is made this way on the demo index).
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { startServer, stopped, cliHits } from './common.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '../../third_party/node/package.json'));
const puppeteer = require('puppeteer-core');
const [invp, idx, image, , screenshot] = process.argv.slice(2);
const K = 20;
let failures = 0, checks = 0;
function check(name, ok, detail = '') {
  checks++;
  if (!ok) { failures++; console.log('FAIL: ' + name + (detail ? ' (' + detail + ')' : '')); }
}
const gridIds = (page) => page.$$eval('#hits .hit', (els) => els.map((e) => Number(e.dataset.id)));
// Every thumbnail in the grid decoded (bounded by the wait's timeout).
const thumbsLoaded = (page) => page.waitForFunction(() => {
  const imgs = [...document.querySelectorAll('#hits .hit img')];
  return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0);
}, { timeout: 20000 });

const server = await startServer(invp, idx);
const browser = await puppeteer.launch({ executablePath: '/usr/bin/chromium', headless: 'new',
                                         args: ['--no-sandbox', '--disable-gpu'], timeout: 60000 });
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1366, height: 900 });
  page.setDefaultTimeout(20000);
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(server.url + '/', { waitUntil: 'load' });
  await page.waitForFunction(() => /items/.test(document.querySelector('#facts').textContent));
  check('facts show the index size', (await page.$eval('#facts', (e) => e.textContent)).length > 10);
  await page.select('#k', String(K));

  // Upload through the page's own file input.
  const input = await page.$('#file');
  await input.uploadFile(image);
  await page.waitForFunction(() => (document.querySelector('#hits').dataset.query || '').startsWith('upload'));
  const want = cliHits(invp, idx, [image], K).map((h) => h.id);
  const got = await gridIds(page);
  check('uploaded image: the hits of invp --json query, in order', JSON.stringify(got) === JSON.stringify(want),
        `page ${got} cli ${want}`);
  await thumbsLoaded(page);
  check('each hit shows a score and a category', await page.$$eval('#hits .hit', (els) =>
    els.every((e) => /^\d\.\d{3}$/.test(e.querySelector('.score').textContent) && e.querySelector('.cat').textContent.length > 0)));
  await page.waitForFunction(() => document.querySelectorAll('#categories li').length > 0);
  check('nearest categories panel filled', true);
  await page.waitForFunction(() => document.querySelectorAll('#propagation .row').length > 0);

  // Click the second hit: a new search from it, by id.
  const second = got[1];
  await page.click('#hits .hit:nth-child(2)');
  await page.waitForFunction((id) => document.querySelector('#hits').dataset.query === 'id ' + id, {}, second);
  const again = await gridIds(page);
  const wantAgain = cliHits(invp, idx, ['--id', String(second)], K).map((h) => h.id);
  check('clicked hit: a new grid equal to invp --json query --id', JSON.stringify(again) === JSON.stringify(wantAgain),
        `page ${again} cli ${wantAgain}`);
  check('the new grid differs from the first', JSON.stringify(again) !== JSON.stringify(got));
  await thumbsLoaded(page);
  await page.waitForFunction(() => document.querySelectorAll('#propagation .row img').length > 0);

  // A filter typed into the page re-runs the search: the hits of invp --json query --filter.
  await page.type('#filter', 'category=class0');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => [...document.querySelectorAll('#hits .hit .cat')].every((c) => c.textContent.startsWith('class0 ')));
  const filtered = await gridIds(page);
  const wantFiltered = cliHits(invp, idx, ['--id', String(second), '--filter', 'category=class0'], K).map((h) => h.id);
  check('filtered grid: the hits of invp --json query --filter', JSON.stringify(filtered) === JSON.stringify(wantFiltered),
        `page ${filtered} cli ${wantFiltered}`);
  check('the filter offers the categories', (await page.$$eval('#filter-choices option', (o) => o.map((x) => x.value)))
    .includes('category=class2'));
  await page.$eval('#filter', (e) => { e.value = ''; });
  check('no script errors', errors.length === 0, errors.join('; '));
  if (screenshot) {
    await page.waitForFunction(() => [...document.querySelectorAll('img')].every((i) => i.complete));
    await page.screenshot({ path: screenshot });
  }
} catch (e) {
  failures++;
  console.log('FAIL: ' + (e.stack || e));
} finally {
  await browser.close();
  server.proc.kill('SIGTERM');
  check('server exits 0', (await stopped(server.proc)) === 0);
}
console.log(`${checks - failures}/${checks} checks passed`);
process.exit(failures ? 1 : 0);
