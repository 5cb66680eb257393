// Drives Debian's Chromium with playwright-core (no browser download) for tests/browser/test_jupyterlab.py.
//
//   node drive_lab.mjs lab    '{"url": ..., "artifacts": ..., "expectRequests": N, "expectTraces": M}'
//   node drive_lab.mjs report '{"file": ..., "artifacts": ..., "expectPlots": N}'
//
// "lab": opens the notebook in JupyterLab, runs all cells, and checks that the live figure rendered with
// its traces (and grew while the simulated run went), that the inspector rendered, and that moving its
// slider (keyboard) and its "next" button change the allocator plot. "report": opens an exported HTML
// report with every network request refused and checks that every plot rendered (offline).
// Prints one JSON line with what it saw; exits 1 with a one-line reason on failure. Screenshots go to
// the artifacts folder in both cases.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';

const [mode, argJson] = process.argv.slice(2);
const args = JSON.parse(argJson || '{}');
const T = args.timeoutMs || 180000;
const CHROMIUM = args.chromium || '/usr/bin/chromium';
// Flags for a closed network with no GPU: no QUIC, no background traffic, no component updates.
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

const seen = { mode };
let step = 'start';
function fail(msg) { throw new Error(`${step}: ${msg}`); }

async function shot(page, name) {
  fs.mkdirSync(args.artifacts, { recursive: true });
  const file = path.join(args.artifacts, name);
  await page.screenshot({ path: file, fullPage: true });
  (seen.screenshots ||= []).push(file);
}

// Plotly graph divs: their title text, trace count and per-trace point counts. gd._fullData holds the
// decoded arrays (a figure sent as plotly's mime type carries numpy arrays base64-encoded in gd.data).
const PLOTS_JS = () => Array.from(document.querySelectorAll('.js-plotly-plot')).map((gd) => ({
  title: (gd.layout && gd.layout.title && (gd.layout.title.text || gd.layout.title)) || '',
  traces: (gd.data || []).length,
  points: (gd._fullData || gd.data || []).map((t) => (t.x ? t.x.length : 0)),
  xsum: (gd._fullData || gd.data || []).map((t) => (t.x ? Array.from(t.x).reduce((a, b) => a + Number(b), 0) : 0)),
  rendered: gd.querySelectorAll('.trace, .point, .bars path, .scatterlayer path').length,
}));

async function acceptDialogs(page) {
  const dialog = page.locator('.jp-Dialog');
  if (await dialog.count() === 0) return;
  const text = await dialog.first().innerText().catch(() => '');
  (seen.dialogs ||= []).push(text.replace(/\s+/g, ' ').slice(0, 200));
  await page.locator('.jp-Dialog .jp-mod-accept').first().click().catch(() => {});
}

// Sampled inside the page every 10 ms (no round trips): the live figure's point counts as they change,
// with the wall-clock time each was first on screen, and when the inspector's allocator plot first drew.
function sampleLiveFigure() {
  window.__memlabLengths = [];
  window.__memlabLengthTimes = [];
  window.__memlabInspectorAt = 0;
  setInterval(() => {
    for (const gd of document.querySelectorAll('.js-plotly-plot')) {
      const t = gd.layout && gd.layout.title && String(gd.layout.title.text || '');
      const full = gd._fullData || gd.data;
      if (t && t.startsWith('Memory per request') && full && full[0] && full[0].x
          && gd.querySelector('.scatterlayer .trace')) {
        const n = full[0].x.length;
        const seenSoFar = window.__memlabLengths;
        if (n > 0 && seenSoFar[seenSoFar.length - 1] !== n) {
          seenSoFar.push(n);
          window.__memlabLengthTimes.push(Date.now());
        }
      }
      if (!window.__memlabInspectorAt && t && t.startsWith('Allocator state') && gd.querySelector('.bars path')) {
        window.__memlabInspectorAt = Date.now();
      }
    }
  }, 10);
}

async function lab(page) {
  await page.addInitScript(sampleLiveFigure);
  step = 'open JupyterLab';
  await page.goto(args.url, { waitUntil: 'domcontentloaded', timeout: T });
  await page.locator('.jp-Notebook').first().waitFor({ state: 'visible', timeout: T });
  step = 'wait for the kernel';
  // JupyterLab may ask which kernel to use (seen on a loaded machine although the notebook names one):
  // accept its proposal (the notebook's python3). Then wait until the kernel is idle.
  const t1 = Date.now();
  let idleSince = 0;
  while (Date.now() - t1 < T) {
    await acceptDialogs(page);
    const bar = await page.locator('#jp-main-statusbar').innerText().catch(() => '');
    if (/Idle/.test(bar)) {
      idleSince ||= Date.now();
      if (Date.now() - idleSince > 1500) break;
    } else idleSince = 0;
    await page.waitForTimeout(250);
  }
  step = 'Run > Run All Cells';
  await page.locator('.lm-MenuBar-itemLabel', { hasText: /^Run$/ }).click();
  await page.locator('.lm-Menu-itemLabel', { hasText: /^Run All Cells$/ }).click();

  // While the simulated run goes, the in-page sampler records the live figure's length as it grows.
  step = 'live figure';
  const t0 = Date.now();
  let done = false;
  while (Date.now() - t0 < T) {
    await acceptDialogs(page);
    const text = await page.locator('.jp-OutputArea-output').allInnerTexts();
    const joined = text.join('\n');
    if (/Traceback|Error:/.test(joined) && /Traceback/.test(joined)) fail(`a cell raised:\n${joined.slice(-2000)}`);
    if (joined.includes('MEMLAB_NOTEBOOK_DONE')) { done = true; break; }
    await page.waitForTimeout(200);
  }
  if (!done) fail('the notebook did not finish (no MEMLAB_NOTEBOOK_DONE in the outputs)');
  seen.liveLengths = await page.evaluate(() => window.__memlabLengths);
  const outputs = (await page.locator('.jp-OutputArea-output').allInnerTexts()).join('\n');
  const stamp = (key) => { const m = outputs.match(new RegExp(`${key} (\\d+)`)); return m ? Number(m[1]) : null; };
  const [times, inspectorAt] = await page.evaluate(() => [window.__memlabLengthTimes, window.__memlabInspectorAt]);
  const cellT0 = stamp('MEMLAB_T0');
  const cellT1 = stamp('MEMLAB_T1');
  // from the cell's start (the kernel's clock, same machine) to the page
  seen.timing = { firstLiveMs: cellT0 && times.length ? times[0] - cellT0 : null,
    liveDoneMs: cellT0 && times.length ? times[times.length - 1] - cellT0 : null, liveUpdates: times.length,
    inspectorMs: cellT1 && inspectorAt ? inspectorAt - cellT1 : null };
  const js = outputs.match(/MEMLAB_JS (\d+) (\d+)/);
  seen.figureWidgets = js ? { count: Number(js[1]), esmBytes: Number(js[2]) } : null;
  seen.notebookDone = (outputs.match(/MEMLAB_NOTEBOOK_DONE[^\n]*/) || [''])[0].trim();

  const plots = await page.evaluate(PLOTS_JS);
  const live = plots.find((p) => String(p.title).startsWith('Memory per request'));
  if (!live) fail(`no live figure among ${plots.length} plots: ${JSON.stringify(plots.map((p) => p.title))}`);
  seen.live = live;
  if (live.traces !== args.expectTraces) fail(`live figure has ${live.traces} traces, expected ${args.expectTraces}`);
  if (live.points[0] !== args.expectRequests) fail(`live figure has ${live.points[0]} points, expected ${args.expectRequests}`);
  if (live.rendered === 0) fail('live figure has no rendered trace elements');
  if (!String(live.title).includes('simulated')) fail('live figure title does not say simulated');

  step = 'inspector';
  const stateTitle = async () => page.evaluate(() => {
    const gds = Array.from(document.querySelectorAll('.js-plotly-plot'));
    const gd = gds.find((g) => g.layout && g.layout.title && String(g.layout.title.text).startsWith('Allocator state'));
    if (!gd) return null;
    return { title: gd.layout.title.text, traces: gd.data.length, x: gd.data.map((t) => (t.x ? t.x.length : 0)),
      cats: (gd.layout.yaxis.categoryarray || []).length, bars: gd.querySelectorAll('.bars path').length };
  });
  const waitTitle = async (re, what) => {
    const t1 = Date.now();
    let s = null;
    while (Date.now() - t1 < 60000) {
      s = await stateTitle();
      if (s && re.test(s.title)) return s;
      await page.waitForTimeout(100);
    }
    fail(`${what}: allocator plot title is ${JSON.stringify(s && s.title)}`);
  };
  const first = await waitTitle(/after request 5,/, 'initial request');
  if (first.bars === 0) fail('allocator plot rendered no bars');
  seen.inspectorStart = first;
  const slider = page.locator('.widget-slider .noUi-handle, .widget-slider [role="slider"]').first();
  await slider.scrollIntoViewIfNeeded();
  await shot(page, 'jupyterlab-inspector-request-5.png');

  step = 'slider (keyboard)';
  await slider.focus();
  await page.keyboard.press('ArrowRight');
  const afterKey = await waitTitle(/after request 6,/, 'after ArrowRight');
  await page.keyboard.press('Home');
  const atZero = await waitTitle(/after request 0,/, 'after Home');
  seen.sliderStates = [afterKey, atZero];
  if (JSON.stringify(atZero.x) === JSON.stringify(first.x) && atZero.cats === first.cats) {
    fail('moving the slider from request 5 to 0 changed the title but not the plotted blocks');
  }

  step = 'conf sweep';
  const sweep = plots.find((p) => /^reserved per request.*: 2 runs — simulated/.test(String(p.title)));
  if (!sweep) fail(`no sweep comparison among ${JSON.stringify(plots.map((p) => String(p.title).split('<br>')[0]))}`);
  if (sweep.traces !== 2 || sweep.rendered === 0) fail(`sweep comparison has ${sweep.traces} traces`);
  seen.sweep = sweep;

  step = 'next button';
  await page.getByRole('button', { name: 'next ▶' }).click();
  seen.afterNext = await waitTitle(/after request 1,/, 'after next');
  await shot(page, 'jupyterlab-inspector-request-1.png');
  const inspectorOut = page.locator('.jp-Cell:nth-child(3) .jp-OutputArea').first();
  await inspectorOut.scrollIntoViewIfNeeded();
  await inspectorOut.screenshot({ path: path.join(args.artifacts, 'jupyterlab-inspector-widget.png') });
  seen.screenshots.push(path.join(args.artifacts, 'jupyterlab-inspector-widget.png'));
  await page.locator('.jp-Cell:nth-child(2) .js-plotly-plot').first().scrollIntoViewIfNeeded();
  await shot(page, 'jupyterlab-live-figure.png');
  await page.locator('.jp-Cell:nth-child(4) .widget-text').first().scrollIntoViewIfNeeded();
  await shot(page, 'jupyterlab-conf-sweep.png');
}

async function report(page, context) {
  step = 'offline report';
  const refused = [];
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith('file:')) return route.continue();
    refused.push(url);
    return route.abort();
  });
  await page.goto('file://' + args.file, { waitUntil: 'load', timeout: T });
  await page.waitForFunction((n) => document.querySelectorAll('.js-plotly-plot .main-svg').length >= n,
    args.expectPlots, { timeout: T });
  const plots = await page.evaluate(PLOTS_JS);
  seen.plots = plots.map((p) => ({ title: String(p.title).split('<br>')[0], traces: p.traces, rendered: p.rendered }));
  seen.refused = refused;
  if (refused.length) fail(`the report tried to load from the network: ${refused.join(', ')}`);
  const empty = plots.filter((p) => p.traces === 0 || p.rendered === 0);
  if (empty.length) fail(`plots without rendered traces: ${JSON.stringify(empty.map((p) => p.title))}`);
  await shot(page, 'report-offline.png');
}

// A fresh, empty profile per run (launchPersistentContext passes it as --user-data-dir).
const userData = fs.mkdtempSync(path.join(os.tmpdir(), 'memlab-chromium-'));
let browser;
let code = 0;
try {
  browser = await chromium.launchPersistentContext(userData, { executablePath: CHROMIUM, headless: true,
    args: FLAGS, timeout: 60000, viewport: { width: 1400, height: 1600 } });
  const context = browser;
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(T);
  const consoleErrors = [];
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  try {
    if (mode === 'lab') await lab(page);
    else if (mode === 'report') await report(page, context);
    else fail(`unknown mode ${mode}`);
  } catch (err) {
    code = 1;
    seen.error = String(err.message || err);
    try { await shot(page, `failure-${mode}.png`); } catch (_) { /* best effort */ }
  }
  seen.pageErrors = consoleErrors.slice(0, 20);
} catch (err) {
  code = 1;
  seen.error = `could not start Chromium at ${CHROMIUM}: ${err.message || err}`;
} finally {
  if (browser) await browser.close().catch(() => {});
  fs.rmSync(userData, { recursive: true, force: true });
}
console.log(JSON.stringify(seen));
process.exit(code);
