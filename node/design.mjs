// Drive the demo's Design tab in Debian's Chromium (never a downloaded browser) with playwright-core.
// Why a Node script: the same pinned playwright-core that drive.mjs uses; tests/demo/test_design.py runs this
// against a real `matslice demo` and checks what it prints.
//
// usage: node design.mjs <url> --out DIR [--store N] [--build NAME [--start LABEL] [--text-only] [--add-dtype D]]
//        [--prompt TEXT] [--chromium PATH]
// Opens the page, screenshots the Compare tab (the size/quality plot), switches to Design, reads which layers
// the grid marks as KV stores, ticks "skip" on store layer N, waits for the verdict to change, screenshots,
// presses Build (which must refuse with the reason), unticks it and waits for the design to be valid again, and,
// with --build NAME, builds it under that name (recording the progress the page shows while it builds), waits for
// it to join the Compare tab's choices, picks it and runs a prompt on the picked variants (--prompt).
// Prints one JSON line.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
        out: { type: 'string' },
        store: { type: 'string', default: '5' },
        build: { type: 'string' },
        start: { type: 'string' },
        prompt: { type: 'string', default: 'The history of the city' },
        'text-only': { type: 'boolean', default: false },
        'add-dtype': { type: 'string' },
        chromium: { type: 'string', default: '/usr/bin/chromium' },
        timeout: { type: 'string', default: '60000' },
    },
});
const [url] = positionals;
const timeout = Number(values.timeout);
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'];

const profile = mkdtempSync(path.join(tmpdir(), 'matslice-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
    executablePath: values.chromium, headless: true, args: FLAGS, viewport: { width: 1280, height: 1000 },
});
const requests = [];
const consoleLines = [];
context.on('request', (r) => requests.push(r.url()));
const page = context.pages()[0] ?? await context.newPage();
page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));

const verdict = () => page.textContent('#design-verdict');
const waitVerdict = (word) => page.waitForFunction(
    (w) => (document.querySelector('#design-verdict')?.textContent ?? '').includes(w), word, { timeout });
const result = { requests, console: consoleLines };
try {
    await page.goto(url);
    await page.waitForSelector('#pareto-plot img', { timeout: 180000 });  // the plot measures retention first
    await page.screenshot({ path: path.join(values.out, 'demo-compare.png'), fullPage: true });
    await page.getByRole('tab', { name: 'Design' }).click();
    await waitVerdict('Valid design');
    result.validBefore = await verdict();
    result.stores = await page.$$eval('.layer.kv-store', (els) => els.map((e) => e.id));
    result.reuses = await page.$$eval('.layer.kv-reuse', (els) => els.map((e) => e.id));
    result.storeLabel = await page.textContent(`#layer-${values.store}`);
    result.numbersBefore = await page.textContent('#design-numbers');
    await page.check(`#skip-${values.store} input[type=checkbox]`);
    await waitVerdict('Invalid design');
    result.invalid = await verdict();
    result.numbersInvalid = await page.textContent('#design-numbers');
    await page.fill('#design-name input, #design-name textarea', 'bad-design');
    await page.click('#design-build');
    await page.waitForFunction(() => (document.querySelector('#build-status')?.textContent ?? '').includes('Not built'),
        null, { timeout });
    result.buildInvalid = await page.textContent('#build-status');
    await page.screenshot({ path: path.join(values.out, 'demo-design-invalid.png'), fullPage: true });
    await page.uncheck(`#skip-${values.store} input[type=checkbox]`);
    await waitVerdict('Valid design');
    result.validAfter = await verdict();
    result.commands = await page.textContent('#design-commands');
    await page.screenshot({ path: path.join(values.out, 'demo-design.png'), fullPage: true });
    if (values.build) {
        if (values.start) {
            await page.click('#design-start');
            await page.getByRole('option', { name: values.start }).click();
            await page.waitForTimeout(2000);
        }
        if (values['text-only']) {
            for (const box of await page.$$('#design-modalities input[type=checkbox]')) {
                if (await box.evaluate((e) => e.parentElement.textContent.trim() !== 'text') && await box.isChecked()) {
                    await box.uncheck();
                }
            }
        }
        if (values['add-dtype']) {
            await page.locator('#design-dtypes label').filter({ hasText: new RegExp(`^\\s*${values['add-dtype']}\\s*$`) })
                .locator('input').check();
        }
        if (values['text-only'] || values['add-dtype']) await page.waitForTimeout(2000);  // the design re-plans
        result.designNumbers = await page.textContent('#design-numbers');
        await page.fill('#design-name input, #design-name textarea', values.build);
        await page.click('#design-build');
        // The status box still holds the refused build's "Not built" until this build starts
        await page.waitForFunction(() => /Building/.test(document.querySelector('#build-status')?.textContent ?? ''),
            null, { timeout });
        // What the page shows while it builds: Gradio's progress (stage and fraction) over the status box.
        result.progress = [];
        const finished = (name) => {
            const text = document.querySelector('#build-status')?.textContent ?? '';
            return text.includes(`Built ${name}`) || text.includes('Build failed') || text.includes('Not built');
        };
        const deadline = Date.now() + 600000;
        let shot = false;
        while (!(await page.evaluate(finished, values.build))) {
            if (Date.now() > deadline) throw new Error('the build did not finish in 600 s');
            const shown = (await page.textContent('#build-status')).trim();
            if (shown && !result.progress.includes(shown)) result.progress.push(shown);
            if (!shot && /\d+(\.\d+)?%/.test(shown)) {
                await page.screenshot({ path: path.join(values.out, 'demo-design-building.png'), fullPage: true });
                shot = true;
            }
            await page.waitForTimeout(250);
        }
        result.built = await page.textContent('#build-status');
        await page.getByRole('tab', { name: 'Compare' }).click();
        await page.click('#picked input');
        await page.waitForSelector('[role=option]', { timeout });
        result.choices = await page.$$eval('[role=option]', (els) => els.map((e) => e.textContent.trim()));
        const mine = page.getByRole('option', { name: values.build });
        if (await mine.count()) {
            await mine.first().click();
            await page.keyboard.press('Escape');
            await page.fill('#prompt textarea', values.prompt);
            await page.getByRole('button', { name: 'Run', exact: true }).click();
            await page.waitForFunction(() => /variants, done/.test(document.body.textContent), null,
                { timeout: 300000 });
            result.columns = await page.$$eval('.column-text textarea', (els) => els.map((e) => e.value));
            result.headers = await page.$$eval('h3', (els) => els.map((e) => e.textContent.trim()));
        }
        await page.screenshot({ path: path.join(values.out, 'demo-compare-built.png'), fullPage: true });
    }
} catch (e) {
    result.failure = String(e);
    await page.screenshot({ path: path.join(values.out, 'demo-design-failure.png'), fullPage: true }).catch(() => {});
} finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
