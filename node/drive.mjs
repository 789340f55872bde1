// Drive Debian's Chromium (never a downloaded browser) through the MatSlice page with playwright-core.
// Why a Node script: playwright-core is a plain npm package with no browser download step, pinned in this
// folder's package-lock.json; tests/site/test_browser.py runs this and checks what it prints.
//
// usage: node drive.mjs <url> --screenshot out.png [--prompt text] [--max-new-tokens N] [--dtype q4] [--expect run|error]
// prints one JSON line: {matslice, requests, error, console, timings}
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
        screenshot: { type: 'string' },
        prompt: { type: 'string', default: 'Hello world' },
        'max-new-tokens': { type: 'string', default: '24' },
        expect: { type: 'string', default: 'run' },
        dtype: { type: 'string' },
        chromium: { type: 'string', default: '/usr/bin/chromium' },
        timeout: { type: 'string', default: '90000' },
    },
});
const [url] = positionals;
const timeout = Number(values.timeout);
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'];

const profile = mkdtempSync(path.join(tmpdir(), 'matslice-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
    executablePath: values.chromium, headless: true, args: FLAGS, viewport: { width: 1100, height: 1000 },
});
const requests = [];
const consoleLines = [];
context.on('request', (r) => requests.push(r.url()));
const page = context.pages()[0] ?? await context.newPage();
page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));

const result = { requests, console: consoleLines, timings: {} };
try {
    const t0 = Date.now();
    await page.goto(url);
    await page.waitForFunction(() => window.matslice?.started || window.matslice?.error, null, { timeout });
    if (values.dtype) await page.selectOption('#dtype', values.dtype);
    await page.click('#load');
    await page.waitForFunction(() => window.matslice.ready || (window.matslice.error && !window.matslice.loading),
        null, { timeout });
    result.timings.pageToReadyMs = Date.now() - t0;
    if (values.expect === 'run' && await page.evaluate(() => window.matslice.ready)) {
        await page.fill('#max-tokens', values['max-new-tokens']);
        await page.fill('#prompt', values.prompt);
        await page.click('#send');
        await page.waitForFunction(() => window.matslice.lastRun || window.matslice.error, null, { timeout });
    }
    result.error = await page.evaluate(() => {
        const box = document.getElementById('error');
        return box.hidden ? null : box.textContent;
    });
    result.matslice = await page.evaluate(() => window.matslice);
    result.backendLine = await page.textContent('#backend');
    result.isolation = await page.textContent('#isolation');
    result.stats = await page.textContent('#stats');
} catch (e) {
    result.failure = String(e);
} finally {
    if (values.screenshot) await page.screenshot({ path: values.screenshot, fullPage: true }).catch(() => {});
    await context.close();
    rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
