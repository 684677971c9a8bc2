// Opens a control replica's dashboard in headless Chromium and reports, as JSON lines, what it draws.
// Used by tests/dashboard.rs.
//
//   node tests/browser/dashboard.mjs URL STREAM NODE DETOUR SCREENSHOT
//
// 1. Waits (up to 30 s) until the map is drawn and STREAM's tree passes through NODE, then prints
//    {"phase":"ready", ...}: what the page shows (nodes, links, the tree, viewers per region).
// 2. Waits for a line on stdin (the test kills NODE, then writes it), then waits (up to 10 s) until the
//    page marks NODE failed and prints when the page drew it so (failed_at, ms since the epoch), and
//    (up to 15 s more) until the tree goes through DETOUR instead; saves a screenshot to SCREENSHOT and
//    prints {"phase":"failed", ...}.
import { chromium } from 'playwright-core';
import readline from 'node:readline';

const [url, stream, node, detour, screenshot] = process.argv.slice(2);
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

// What the page shows now, read from its SVG and side panel.
const seen = (page) => page.evaluate(() => {
  const all = (sel) => [...document.querySelectorAll(sel)];
  return {
    world: document.body.dataset.world ?? null,
    countries: all('#countries path').length,
    status: document.getElementById('status').textContent,
    nodes: Object.fromEntries(all('#nodes .node').map((g) => [g.dataset.node, g.dataset.state])),
    links: all('#links .link').map((l) => `${l.dataset.a}-${l.dataset.b}:${l.dataset.state}:${l.getAttribute('stroke') ?? ''}`),
    stream: document.getElementById('stream').value,
    tree: all('#tree .tree-edge').map((e) => `${e.dataset.from}>${e.dataset.to}`),
    viewers: Object.fromEntries(all('#regions text.viewers').map((t) => [t.closest('.region').dataset.region, Number(t.dataset.viewers)])),
  };
});

// Polls `predicate` in the page every 20 ms until it holds, for up to `timeout` ms. (Playwright's
// waitForFunction evaluates a string inside the page, which the dashboard's Content-Security-Policy forbids.)
async function until(page, predicate, args, timeout) {
  const deadline = Date.now() + timeout;
  while (!(await page.evaluate(predicate, args))) {
    if (Date.now() > deadline) throw new Error(`not within ${timeout} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 720 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  await page.goto(url);
  try {
    await until(page, ([stream, node]) =>
      document.body.dataset.world === 'drawn'
        && document.getElementById('stream').value === stream
        && document.querySelector(`#tree .tree-edge[data-to="${node}"]`) !== null
        && document.querySelector('#regions text.viewers') !== null,
    [stream, node], 30000);
  } catch (e) {
    console.log(JSON.stringify({ phase: 'ready', error: `the page never showed ${stream}'s tree through ${node}: ${e.message}`, errors, ...(await seen(page)) }));
    process.exit(0);
  }
  console.log(JSON.stringify({ phase: 'ready', errors, ...(await seen(page)) }));

  await lines.next();
  let failedAt = null;
  try {
    const failed = `#nodes .node[data-node="${node}"][data-failed="true"]`;
    await until(page, (failed) => document.querySelector(failed) !== null, failed, 10000);
    failedAt = Number(await page.evaluate((failed) => document.querySelector(failed).dataset.failedAt, failed));
  } catch (e) {
    await page.screenshot({ path: screenshot });
    console.log(JSON.stringify({ phase: 'failed', error: `${node} never showed failed: ${e.message}`, errors, ...(await seen(page)) }));
    process.exit(0);
  }
  let detoured = true;
  try {
    await until(page, (detour) => document.querySelector(`#tree .tree-edge[data-to="${detour}"]`) !== null
      && document.querySelector(`#tree .tree-edge[data-from="${detour}"]`) !== null, detour, 15000);
  } catch {
    detoured = false;
  }
  await page.screenshot({ path: screenshot });
  console.log(JSON.stringify({ phase: 'failed', failed_at: failedAt, detoured, errors, ...(await seen(page)) }));
} finally {
  await browser.close();
}
