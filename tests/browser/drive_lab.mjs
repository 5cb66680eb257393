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
    // the live figure's light frames (an inline SVG drawn kernel-side while the run goes)
    for (const f of document.querySelectorAll('.memlab-live-frame')) {
      const n = Number(f.dataset.points || 0);
      const seenSoFar = window.__memlabLengths;
      if (String(f.dataset.title || '').startsWith('Memory per request') && f.querySelector('svg polyline')
          && n > 0 && seenSoFar[seenSoFar.length - 1] !== n) {
        seenSoFar.push(n);
        window.__memlabLengthTimes.push(Date.now());
        (window.__memlabFrameTitles ||= []).push(f.dataset.title);
      }
    }
  }, 10);
}

// Page-side milestones (wall clock, ms), recorded inside the page by a MutationObserver and a trap on
// window.Plotly, for the breakdown of the time from a cell's start to its first point on screen.
function markMilestones() {
  const m = window.__memlabMarks = {};
  const mark = (k) => { if (!m[k]) m[k] = Date.now(); };
  const log = window.__memlabLog = [];  // [time, what, detail]
  let plotly;
  const wrap = (obj, name) => {
    const f = obj[name];
    if (typeof f !== 'function') return;
    obj[name] = function (...a) {
      const t = Date.now();
      const title = String((a[2] && a[2].title && (a[2].title.text || a[2].title)) || '').slice(0, 24);
      const r = f.apply(this, a);
      log.push([t, `Plotly.${name}`, title, Date.now() - t]);
      if (r && r.then) r.then(() => log.push([Date.now(), `Plotly.${name} done`, title]));
      return r;
    };
  };
  try {
    Object.defineProperty(window, 'Plotly', { configurable: true, get: () => plotly,
      set: (v) => { plotly = v; mark('plotlyDefined'); if (v) { wrap(v, 'newPlot'); wrap(v, 'react'); } } });
  } catch (_) { /* already defined */ }
  // kernel messages as the page's event loop received them
  const Native = window.WebSocket;
  const dec = new TextDecoder();
  window.WebSocket = class extends Native {
    constructor(...a) {
      super(...a);
      this.addEventListener('message', (e) => {
        const d = e.data;
        const s = typeof d === 'string' ? d.slice(0, 20000)
          : (d instanceof ArrayBuffer ? dec.decode(new Uint8Array(d, 0, Math.min(20000, d.byteLength))) : '');
        const type = (s.match(/"msg_type":\s*"([a-z_]+)"/) || [])[1];
        if (!type || /^(status|kernel_info_reply|comm_info_reply)$/.test(type)) return;
        const tag = /MEMLAB_T0/.test(s) ? 'T0' : /MEMLAB_T1/.test(s) ? 'T1' : /vnd\.plotly/.test(s) ? 'plotly'
          : /memlab-live-frame/.test(s) ? 'frame' : '';
        log.push([Date.now(), `ws ${type}`, tag, typeof d === 'string' ? d.length : d.byteLength]);
      });
    }
  };
  try {
    new PerformanceObserver((l) => { for (const e of l.getEntries()) {
      log.push([Math.round(performance.timeOrigin + e.startTime), 'longtask', '', Math.round(e.duration)]);
    } }).observe({ type: 'longtask', buffered: true });
  } catch (_) { /* no long tasks API */ }
  const cell = (n) => document.querySelector(`.jp-Notebook .jp-Cell:nth-child(${n})`);
  const check = () => {
    const c2 = cell(2);
    if (c2) {
      if (c2.querySelector('.jp-OutputArea-output')) mark('liveOutputArea');
      if (c2.querySelector('.widget-output, .jupyter-widgets')) mark('liveWidgetView');
      if (c2.querySelector('.js-plotly-plot')) mark('livePlotDiv');
      if (c2.querySelector('.js-plotly-plot .scatterlayer .trace')) mark('liveTrace');
      if (c2.querySelector('.memlab-live-frame svg polyline')) mark('liveFirstFrame');
    }
    const c3 = cell(3);
    if (c3) {
      if (c3.querySelector('.jp-OutputArea-output')) mark('inspOutputArea');
      if (c3.querySelector('.widget-vbox, .jupyter-widgets')) mark('inspWidgetView');
      if (c3.querySelector('.js-plotly-plot')) mark('inspPlotDiv');
      if (c3.querySelector('.js-plotly-plot .bars path')) mark('inspBars');
    }
  };
  new MutationObserver(check).observe(document, { childList: true, subtree: true });
}

// The page's script loads (when each finished, its size): plotly.js is a 4.8 MB chunk of jupyterlab-plotly.
function watchScripts(page) {
  const scripts = seen.scripts = [];
  page.on('requestfinished', async (req) => {
    const url = req.url();
    if (!/\.js(\?|$)/.test(url)) return;
    const t = Date.now();
    let bytes = 0;
    try { bytes = (await req.sizes()).responseBodySize; } catch (_) { /* gone */ }
    scripts.push([t, url.replace(/^https?:\/\/[^/]+/, '').replace(/\?.*$/, ''), bytes]);
  });
}

// Self time (ms) per function and per script in the first 1.5 s after each cell's start (diagnosis).
function summarizeProfile(profile, cellT0, cellT1) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  let t = profile.startTime;
  const out = {};
  const windows = { live: cellT0, inspector: cellT1 };
  for (const [name, w0] of Object.entries(windows)) out[name] = { fn: {}, url: {} };
  profile.samples.forEach((id, i) => {
    t += profile.timeDeltas[i];
    const wall = seen.profStart + (t - profile.startTime) / 1000;
    const dt = (profile.timeDeltas[i + 1] || 0) / 1000;
    const cf = byId.get(id).callFrame;
    const url = (cf.url || '(native)').split('/').slice(-1)[0].replace(/\?.*$/, '');
    const fn = `${cf.functionName || '(anon)'} ${url}:${cf.lineNumber}`;
    for (const [name, w0] of Object.entries(windows)) {
      if (w0 && wall >= w0 && wall < w0 + 1500) {
        out[name].fn[fn] = (out[name].fn[fn] || 0) + dt;
        out[name].url[url] = (out[name].url[url] || 0) + dt;
      }
    }
  });
  const top = (o, n) => Object.entries(o).sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, v]) => [k, Math.round(v)]);
  for (const name of Object.keys(out)) out[name] = { fn: top(out[name].fn, 30), url: top(out[name].url, 12) };
  return out;
}

// Milestones relative to the cell's start (kernel clock = page clock: same machine), for the report: DOM
// marks, the first kernel messages as the page's event loop got them, Plotly.react calls, long tasks.
function breakdown(cellT0, cellT1) {
  if (!cellT0) return null;
  const out = { pageOpenToCellStart: cellT0 - seen.pageOpened };
  for (const [k, t] of Object.entries(seen.marks || {})) {
    out[k] = t - (k.startsWith('insp') ? cellT1 : cellT0);
  }
  const log = (seen.pageLog || []).slice().sort((a, b) => a[0] - b[0]);
  const first = (from, pred) => { const e = log.find((x) => x[0] >= from && pred(x)); return e ? e[0] - from : null; };
  const within = (from, to) => log.filter((x) => x[0] >= from && x[0] < to);
  const end1 = cellT1 || Infinity;
  Object.assign(out, {
    live: { firstMessage: first(cellT0, (x) => x[1].startsWith('ws ')),
      firstFrameMessage: first(cellT0, (x) => x[2] === 'frame'),
      firstPlotlyMessage: first(cellT0, (x) => x[2] === 'plotly'),
      longTasks: within(cellT0, end1).filter((x) => x[1] === 'longtask').map((x) => [x[0] - cellT0, x[3]]),
      plotlyReact: within(cellT0, end1).filter((x) => x[1] === 'Plotly.react').map((x) => [x[0] - cellT0, x[2], x[3]]) },
  });
  if (cellT1) {
    out.inspector = { stateFigureMessage: first(cellT1, (x) => x[2] === 'plotly'),
      longTasks: within(cellT1, cellT1 + 3000).filter((x) => x[1] === 'longtask').map((x) => [x[0] - cellT1, x[3]]),
      plotlyReact: within(cellT1, cellT1 + 3000).filter((x) => x[1] === 'Plotly.react').map((x) => [x[0] - cellT1, x[2], x[3]]) };
  }
  out.bigScripts = (seen.scripts || []).filter((x) => x[2] > 300000)
    .map((x) => [x[0] - seen.pageOpened, x[1].split('/').slice(-2).join('/'), x[2]]);
  return out;
}

async function lab(page) {
  await page.addInitScript(sampleLiveFigure);
  await page.addInitScript(markMilestones);
  watchScripts(page);
  seen.pageOpened = Date.now();
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
  seen.kernelIdle = Date.now();
  step = 'Run > Run All Cells';
  await page.locator('.lm-MenuBar-itemLabel', { hasText: /^Run$/ }).click();
  await page.locator('.lm-Menu-itemLabel', { hasText: /^Run All Cells$/ }).click();

  let cdp = null;
  if (args.profile) {  // diagnosis only (MEMLAB_BROWSER_PROFILE=1): a CPU profile of the page while the cells run
    cdp = await page.context().newCDPSession(page);
    await cdp.send('Profiler.enable');
    await cdp.send('Profiler.setSamplingInterval', { interval: 500 });
    seen.profStart = Date.now();
    await cdp.send('Profiler.start');
  }
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
  seen.frameTitles = await page.evaluate(() => Array.from(new Set(window.__memlabFrameTitles || [])));
  if (seen.frameTitles.some((t) => !t.includes('simulated'))) fail(`a live frame is not labelled simulated: ${seen.frameTitles}`);
  const outputs = (await page.locator('.jp-OutputArea-output').allInnerTexts()).join('\n');
  const stamp = (key) => { const m = outputs.match(new RegExp(`${key} (\\d+)`)); return m ? Number(m[1]) : null; };
  const [times, inspectorAt] = await page.evaluate(() => [window.__memlabLengthTimes, window.__memlabInspectorAt]);
  const cellT0 = stamp('MEMLAB_T0');
  const cellT1 = stamp('MEMLAB_T1');
  // from the cell's start (the kernel's clock, same machine) to the page
  seen.timing = { firstLiveMs: cellT0 && times.length ? times[0] - cellT0 : null,
    liveDoneMs: cellT0 && times.length ? times[times.length - 1] - cellT0 : null, liveUpdates: times.length,
    inspectorMs: cellT1 && inspectorAt ? inspectorAt - cellT1 : null };
  if (cdp) seen.profile = summarizeProfile((await cdp.send('Profiler.stop')).profile, cellT0, cellT1);
  seen.marks = await page.evaluate(() => window.__memlabMarks);
  seen.pageLog = await page.evaluate(() => window.__memlabLog);
  seen.cellT0 = cellT0;
  seen.cellT1 = cellT1;
  seen.breakdown = breakdown(cellT0, cellT1);
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
  // the overview beside the statistics: the rank's memory as an inline SVG, a line at the request shown
  const overview = async () => page.evaluate(() => {
    const f = document.querySelector('.memlab-overview');
    return f && { title: f.dataset.title, points: Number(f.dataset.points), lines: f.querySelectorAll('polyline').length };
  });
  // the overview is its own output, updated after the allocator plot: wait for it as for the title
  const waitOverview = async (re) => {
    let o = null;
    for (const t2 = Date.now(); Date.now() - t2 < 30000; await page.waitForTimeout(100)) {
      o = await overview();
      if (o && o.lines > 0 && re.test(o.title)) break;
    }
    return o;
  };
  seen.overview = await waitOverview(/request 5 — simulated/);
  if (!seen.overview || seen.overview.lines === 0 || !/request 5 — simulated/.test(seen.overview.title)) {
    fail(`inspector overview: ${JSON.stringify(seen.overview)}`);
  }
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
  const ov1 = await waitOverview(/request 1 — simulated/);
  if (!ov1 || !/request 1 — simulated/.test(ov1.title)) fail(`overview after next: ${JSON.stringify(ov1)}`);
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
