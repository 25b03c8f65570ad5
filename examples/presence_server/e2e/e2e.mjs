// End-to-end browser test of the example presence server.
//
//   node e2e.mjs SERVER_BINARY [OUT_DIR]
//
// Starts presence_server on a free port with its own users and data folder,
// opens the page as alice in headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core; no browser is downloaded), and checks what a
// person would see: bob goes online when a WebSocket client of his connects;
// clicking DND turns alice's dot red; bob goes offline after his client
// drops. Screenshots go to OUT_DIR (default ./out). Ends with the line
// "e2e: N passed, N failed" and exit code 0 only when all passed.
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const serverBinary = process.argv[2];
const outDir = resolve(process.argv[3] || 'out');
if (!serverBinary) {
  console.error('usage: node e2e.mjs SERVER_BINARY [OUT_DIR]');
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });

const work = mkdtempSync(join(tmpdir(), 'presence-e2e-'));
const tokens = { alice: 'tok-alice-0123456789', bob: 'tok-bob-0123456789ab', carol: 'tok-carol-0123456789' };
writeFileSync(join(work, 'auth.txt'), [
  `user alice ${tokens.alice} bob carol`,
  `user bob ${tokens.bob} alice`,
  `user carol ${tokens.carol} alice`,
  'topic team alice bob carol',
  'topic workspace alice',  // alice watches the simulated crowd (--simulate)
  '',
].join('\n'));

let passed = 0;
let failed = 0;
async function step(name, fn) {
  const start = Date.now();
  try {
    await fn();
    passed++;
    console.log(`  PASS  ${name} (${Date.now() - start} ms)`);
  } catch (e) {
    failed++;
    console.log(`  FAIL  ${name}: ${e.message.split('\n')[0]}`);
  }
}

// The server: port 0, and a bound lifetime so that nothing outlives the test.
const server = spawn(serverBinary, [
  '--port', '0', '--data-dir', join(work, 'data'), '--auth', join(work, 'auth.txt'),
  '--simulate', '12', '--exit-after', '180',
], { stdio: ['ignore', 'pipe', 'inherit'] });
const baseUrl = await new Promise((ok, fail) => {
  const timer = setTimeout(() => fail(new Error('the server printed no URL in 15 s')), 15000);
  createInterface({ input: server.stdout }).on('line', (line) => {
    const m = line.match(/listening on (http:\/\/\S+)/);
    if (m) { clearTimeout(timer); ok(m[1]); }
  });
  server.on('exit', (code) => fail(new Error(`the server exited (${code})`)));
});
console.log(`e2e: server at ${baseUrl}`);

const userDataDir = mkdtempSync(join(tmpdir(), 'presence-e2e-chromium-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: { width: 1200, height: 760 },
});
context.setDefaultTimeout(10000);

const row = (page, user) => page.locator(`tr.user[data-user="${user}"]`);
async function waitState(page, user, state, timeout = 10000) {
  await page.waitForSelector(`tr.user[data-user="${user}"][data-state="${state}"]`, { timeout });
}

let bobPage = null;
try {
  const page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (e) => { failed++; console.log(`  FAIL  page error: ${e.message}`); });

  await step('the page loads and alice, its viewer, is online', async () => {
    await page.goto(`${baseUrl}#token=${tokens.alice}`);
    await waitState(page, 'alice', 'online');
    const me = await page.textContent('#me-name');
    if (me !== 'alice') throw new Error(`header shows ${me}`);
  });

  await step('the token has left the address bar', async () => {
    if (page.url().includes('token')) throw new Error(`the URL is still ${page.url()}`);
  });

  await step('bob is offline before any client of his connects', async () => {
    await waitState(page, 'bob', 'offline');
  });

  await step('the simulated crowd shows up in the roster', async () => {
    await page.waitForFunction(() => document.querySelectorAll('tr.user[data-user^="sim-"]').length >= 12);
  });

  await step('bob goes online when his WebSocket client connects', async () => {
    bobPage = await context.newPage();
    await bobPage.goto(`${baseUrl}healthz`);  // the server's own origin, which it accepts
    const wsUrl = baseUrl.replace('http:', 'ws:') + 'presence/stream?device_id=bob-laptop&platform=desktop';
    await bobPage.evaluate(([url, token]) => new Promise((ok, fail) => {
      const ws = new WebSocket(url);
      window.bobSocket = ws;
      ws.onopen = () => {
        ws.send(JSON.stringify({ type: 'auth', token }));
        setInterval(() => ws.send('{"type":"heartbeat"}'), 1000);
        ok();
      };
      ws.onerror = () => fail(new Error('bob could not connect'));
    }), [wsUrl, tokens.bob]);
    const start = Date.now();
    await waitState(page, 'bob', 'online', 5000);
    console.log(`        (bob online on alice's page after ${Date.now() - start} ms)`);
    const devices = await row(page, 'bob').locator('td').nth(4).textContent();
    if (!devices.includes('desktop 1')) throw new Error(`bob's devices show "${devices}"`);
  });

  await step('clicking DND turns alice\'s dot to DND', async () => {
    await page.click('#btn-dnd');
    await waitState(page, 'alice', 'dnd', 5000);
    await page.waitForSelector('#me-dot.dnd');
    const cls = await row(page, 'alice').locator('.dot').getAttribute('class');
    if (!cls.includes('dnd')) throw new Error(`alice's dot has class "${cls}"`);
  });

  await step('the history panel shows bob\'s transitions', async () => {
    await row(page, 'bob').click();
    await page.waitForFunction(() => document.querySelectorAll('#history-list li').length >= 1 &&
                               document.getElementById('history-list').textContent.includes('online'));
  });

  await page.screenshot({ path: join(outDir, 'presence-live.png') });
  console.log(`e2e: screenshot ${join(outDir, 'presence-live.png')}`);

  await step('bob goes offline after his client drops', async () => {
    await bobPage.close();  // the socket goes with the page: an abrupt end
    bobPage = null;
    const start = Date.now();
    await waitState(page, 'bob', 'offline', 10000);
    console.log(`        (bob offline on alice's page ${Date.now() - start} ms after the drop)`);
  });

  await step('clearing DND brings alice back online', async () => {
    await page.click('#btn-clear');
    await waitState(page, 'alice', 'online', 5000);
  });

  await page.screenshot({ path: join(outDir, 'presence-after.png') });
  console.log(`e2e: screenshot ${join(outDir, 'presence-after.png')}`);
} catch (e) {
  failed++;
  console.log(`  FAIL  ${e.message}`);
} finally {
  await context.close().catch(() => {});
  server.kill('SIGTERM');
  await new Promise((ok) => { if (server.exitCode !== null) ok(); else server.on('exit', ok); });
  rmSync(userDataDir, { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
}

console.log(`e2e: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
