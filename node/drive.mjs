// Drive Debian's Chromium (never a downloaded browser) through the MatSlice page with playwright-core.
// Why a Node script: playwright-core is a plain npm package with no browser download step, pinned in this
// folder's package-lock.json; tests/website/test_browser.py and benchmarks/browser.py run this and read what it prints.
//
// usage: node drive.mjs <url> --screenshot out.png [--prompt text] [--max-new-tokens N] [--dtype q4] [--expect run|error]
//        [--webgpu]   (--enable-unsafe-webgpu instead of --disable-gpu: a GPU adapter, or SwiftShader's software one)
//        [--with-audio] [--audio clip.wav]  (load the audio sessions; attach the clip through the page's file input)
//        [--range models/v/onnx/f.onnx_data:START-END]  (fetch that byte range through the page's checked fetch)
//        [--adapter-limit BYTES]  (the WebGPU adapter reports buffer limits no larger than this, as a small GPU's does)
//        [--visits N]  (reload the page and load and run again, N visits in all, in the same profile: Cache API kept)
//        [--wait-for NAME]  (a page of one's own: wait until window[NAME] is set, report it instead of window.matslice)
//        [--timeout ms] (each wait)
// prints one JSON line: {matslice, requests, error, console, timings, memory, range}; memory is the peak resident set
// of the tab's renderer process, of the GPU process and of all this browser's processes, sampled from /proc every 200 ms.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
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
        webgpu: { type: 'boolean', default: false },
        'with-audio': { type: 'boolean', default: false },
        audio: { type: 'string' },
        range: { type: 'string' },
        'adapter-limit': { type: 'string' },
        visits: { type: 'string', default: '1' },
        'wait-for': { type: 'string' },
    },
});
const [url] = positionals;
const timeout = Number(values.timeout);
const FLAGS = ['--headless', '--no-sandbox', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', ...(values.webgpu ? ['--enable-unsafe-webgpu'] : ['--disable-gpu'])];

const profile = mkdtempSync(path.join(tmpdir(), 'matslice-chromium-'));
const memory = { peakRendererBytes: 0, peakGpuProcessBytes: 0, peakTotalBytes: 0 };

function sampleMemory() {
    let total = 0;
    for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
        try {
            const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
            if (!cmd.includes(profile)) continue;
            const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
            total += rss;
            if (cmd.includes('--type=renderer')) memory.peakRendererBytes = Math.max(memory.peakRendererBytes, rss);
            if (cmd.includes('--type=gpu-process')) memory.peakGpuProcessBytes = Math.max(memory.peakGpuProcessBytes, rss);
        } catch { /* the process ended */ }
    }
    memory.peakTotalBytes = Math.max(memory.peakTotalBytes, total);
}
const context = await chromium.launchPersistentContext(profile, {
    executablePath: values.chromium, headless: true, args: FLAGS, viewport: { width: 1100, height: 1000 },
});
if (values['adapter-limit']) {
    // Before any page script: GPUAdapter.limits capped at the given bytes, the two buffer limits the page checks.
    await context.addInitScript((limit) => {
        if (!globalThis.GPUAdapter) return;
        const real = Object.getOwnPropertyDescriptor(GPUAdapter.prototype, 'limits').get;
        const capped = new Set(['maxBufferSize', 'maxStorageBufferBindingSize']);
        Object.defineProperty(GPUAdapter.prototype, 'limits', {
            get() {
                const limits = real.call(this);
                return new Proxy(limits, { get: (t, k) => (capped.has(k) ? Math.min(t[k], limit) : t[k]) });
            },
        });
    }, Number(values['adapter-limit']));
}
const requests = [];
const consoleLines = [];
context.on('request', (r) => requests.push(r.url()));
const page = context.pages()[0] ?? await context.newPage();
page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));

const result = { requests, console: consoleLines, timings: {}, memory };

// One visit of the page: wait for it to start, load the variant (unless refused), run the prompt (--expect run).
async function visit(t0) {
    await page.waitForFunction(() => window.matslice?.started || window.matslice?.error, null, { timeout });
    if (values.range) {
        const [file, span] = values.range.split(':');
        result.range = await page.evaluate(([f, r]) => window.matslice.checkRange(f, r), [file, span]);
    }
    // Load is enabled once the variant's manifest is read; a variant that cannot be read says so instead
    await page.waitForFunction(() => !document.getElementById('load').disabled || window.matslice.error, null,
        { timeout });
    const refused = await page.evaluate(() => document.getElementById('load').disabled);
    if (!refused) {
        if (values.dtype) await page.selectOption('#dtype', values.dtype);
        if (values['with-audio']) await page.check('#with-audio');
        await page.click('#load', { timeout });
        await page.waitForFunction(() => window.matslice.ready || (window.matslice.error && !window.matslice.loading),
            null, { timeout });
    }
    result.timings.pageToReadyMs = Date.now() - t0;
    if (values.expect === 'run' && await page.evaluate(() => window.matslice.ready)) {
        await page.fill('#max-tokens', values['max-new-tokens']);
        if (values.audio) {
            await page.setInputFiles('#audio-file', values.audio);
            await page.waitForFunction(() => /attached/.test(document.getElementById('audio-status').textContent)
                || window.matslice.error, null, { timeout });
        }
        await page.fill('#prompt', values.prompt);
        // the click returns when the page's handler yields; on a big model that can be after a long prefill
        await page.click('#send', { timeout });
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
    result.variants = await page.textContent('#variants');
}

const sampler = setInterval(sampleMemory, 200);
try {
    const t0 = Date.now();
    await page.goto(url);
    if (values['wait-for']) {
        await page.waitForFunction((name) => window[name] !== undefined, values['wait-for'], { timeout });
        result.page = await page.evaluate((name) => window[name], values['wait-for']);
        result.text = await page.evaluate(() => document.body.innerText);
    } else {
        await visit(t0);
        result.visits = [result.matslice];
        for (let n = 1; n < Number(values.visits); n++) {
            await page.reload();
            await visit(Date.now());
            result.visits.push(result.matslice);
        }
    }
} catch (e) {
    result.failure = String(e);
} finally {
    clearInterval(sampler);
    if (values.screenshot) await page.screenshot({ path: values.screenshot, fullPage: true }).catch(() => {});
    await context.close();
    rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
