// MatSlice's loader: runs a MatSlice bundle (a folder holding manifest.json) with transformers.js, from any page.
// No DOM code: the demo page (app.js) is UI on top of it, and so can be yours:
//
//   import { loadVariant } from './matslice.js';
//   const { tokenizer, model, generate } = await loadVariant('models/nano-e2b/', { onProgress: console.log });
//   const run = await generate('The history of the city', { maxNewTokens: 32, onText: (piece) => ... });
//
// What it does, so that a page need not:
// * the backend is decided before any download (`chooseBackend`): WebGPU only when an adapter exists, has what the
//   dtype needs (shader-f16 for float16 arithmetic) and its buffer limits hold the largest tensor it loads (the
//   manifest names it), else WASM, and on WASM a dtype it has kernels for (q8 rather than a 4-bit dtype, which WASM
//   unpacks on every call, unless the caller picked one); the reason is returned in words;
// * every byte of a bundle file is checked against manifest.json while it streams in (per-piece SHA-256; a Range
//   request is widened to whole pieces), so a missing, truncated or corrupt file is named with what to do;
// * a streamed bundle (`matslice export --embeddings streamed`) has no embedding tables to download: the rows of
//   the ids a prompt uses are fetched from its row file by HTTP Range, checked block by block (each block <= 64 KiB,
//   against the file's index, whose digest manifest.json names), kept in memory and in the Cache API, and turned
//   into the embed_tokens session's outputs here (`RowSession`);
// * transformers.js and onnxruntime-web's WASM files come from vendor/ beside this module, never from a CDN.

const VENDOR = new URL('vendor/', import.meta.url).href;
// onnxruntime-web builds: the asyncify build carries the WebGPU execution provider; the plain build is WASM only and
// runs the CPU kernels without asyncify's instrumentation (several times faster per token).
const RUNTIME_BUILDS = { webgpu: 'ort-wasm-simd-threaded.asyncify', wasm: 'ort-wasm-simd-threaded' };
const ROWS_MAGIC = 'MSROWS\x00\x01';
const ROWS_CACHE = 'matslice-rows-v1';
// A host that ignores Range sends the whole row file; it is used whole only below this (a tab holds it in memory).
export const WHOLE_ROWS_LIMIT = 768 << 20;
export const REBUILD = 'Rebuild this variant (nox -s build_web) and copy the whole models/ folder to your host again.';

export class BundleFileError extends Error {
    constructor(file, problem, fix = REBUILD) {
        super(`Model file ${file} ${problem}. ${fix}`);
        this.name = 'BundleFileError';
        this.file = file;
    }
}

export function megabytes(bytes) {
    return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(bytes < 1e7 ? 2 : 1)} MB`;
}

function folderUrl(variantUrl) {
    const base = typeof location === 'undefined' ? undefined : location.href;
    const url = new URL(variantUrl, base);
    if (!url.pathname.endsWith('/')) url.pathname += '/';
    return url.href;
}

// ---------------------------------------------------------------- manifest and backend

/** The variant's manifest.json, checked to be one MatSlice's exporter wrote; `url` is the variant folder. */
export async function readManifest(variantUrl) {
    const url = folderUrl(variantUrl);
    let response;
    try {
        response = await fetch(`${url}manifest.json`, { cache: 'no-cache' });
    } catch (e) {
        throw new BundleFileError(`${url}manifest.json`, `could not be fetched (${e.message})`, 'Check that the server is running.');
    }
    if (!response.ok) throw new BundleFileError(`${url}manifest.json`, `is missing (HTTP ${response.status})`);
    let manifest;
    try {
        manifest = await response.json();
    } catch {
        throw new BundleFileError(`${url}manifest.json`, 'is not valid JSON');
    }
    if (!manifest.dtype_info || !manifest.text_sessions) {
        throw new BundleFileError(`${url}manifest.json`, 'was written by an older MatSlice (no dtype_info or text_sessions)');
    }
    return { ...manifest, url };
}

let adapterInfo = null;

/** What this browser's WebGPU offers, asked once: the adapter's limits and features, or why there is none. */
export async function webgpuAdapter() {
    if (adapterInfo) return adapterInfo;
    let adapter = null;
    let missing = null;
    if (typeof navigator === 'undefined' || !('gpu' in navigator)) {
        missing = 'This browser has no WebGPU (navigator.gpu is missing)';
    } else {
        try {
            adapter = await navigator.gpu.requestAdapter();
        } catch { /* treated as no adapter */ }
        if (!adapter) missing = 'WebGPU found no usable GPU adapter (disabled or blocklisted)';
    }
    if (missing) return (adapterInfo = { missing });
    const info = adapter.info ?? {};
    adapterInfo = {
        vendor: info.vendor ?? '', architecture: info.architecture ?? '', fallback: Boolean(info.isFallbackAdapter),
        shaderF16: adapter.features.has('shader-f16'), maxBufferSize: adapter.limits.maxBufferSize,
        maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
    };
    adapterInfo.name = [adapterInfo.vendor, adapterInfo.architecture].filter(Boolean).join(' ') || 'unnamed';
    return adapterInfo;
}

/** The sessions a load runs: the text pair, or every session for audio input (the vision encoder comes with it). */
export function sessionsFor(manifest, withAudio = false) {
    return withAudio ? Object.keys(manifest.sessions) : manifest.text_sessions;
}

function largestTensor(manifest, dtype, sessions) {
    let largest = null;
    for (const session of sessions) {
        const tensor = manifest.sessions[session][dtype].largest_tensor;
        if (!largest || tensor.bytes > largest.bytes) largest = { ...tensor, session };
    }
    return largest;
}

/**
 * The backend and dtype to load `manifest` with, and the reason in words: {device, dtype, reason}.
 * `dtype`: the caller's pick (kept; the backend moves), else the bundle's default (which moves when another dtype
 * suits the backend better). `device`: 'wasm' or 'webgpu' to force one.
 */
export async function chooseBackend(manifest, { dtype = null, device = null, withAudio = false } = {}) {
    const picked = Boolean(dtype);
    const choice = { device: 'webgpu', dtype: dtype ?? manifest.default_dtype, notes: [] };
    if (!manifest.dtypes.includes(choice.dtype)) {
        throw new Error(`This variant has no ${choice.dtype} files: pick one of ${manifest.dtypes.join(', ')}.`);
    }
    const info = (d) => manifest.dtype_info[d] ?? {};
    const onWasm = (reason) => wasmDtype(manifest, { ...choice, device: 'wasm', reason }, picked, info);
    if (device === 'wasm') return onWasm('WASM chosen by the caller.');
    const gpu = await webgpuAdapter();
    if (gpu.missing) return onWasm(`${gpu.missing}; running on the CPU with WASM.`);
    if (info(choice.dtype).needs_shader_f16 && !gpu.shaderF16) {
        const lacks = `${choice.dtype} needs the WebGPU feature shader-f16, which the ${gpu.name} adapter lacks`;
        const other = manifest.dtypes.find((d) => !info(d).needs_shader_f16);
        if (picked || !other) return onWasm(`${lacks}, so ${choice.dtype} runs on the CPU with WASM.`);
        choice.notes.push(`${lacks}, so ${other} is used.`);
        choice.dtype = other;
    }
    const largest = largestTensor(manifest, choice.dtype, sessionsFor(manifest, withAudio));
    const need = `the largest ${choice.dtype} tensor it loads, ${largest.name} in ${largest.session}, is ${megabytes(largest.bytes)}`;
    for (const [limit, what] of [[gpu.maxStorageBufferBindingSize, 'storage-buffer binding'], [gpu.maxBufferSize, 'buffer']]) {
        if (largest.bytes > limit) {
            return onWasm(`The ${gpu.name} adapter allows ${megabytes(limit)} per ${what} but ${need}; running on the CPU with WASM.`);
        }
    }
    const within = `within its ${megabytes(gpu.maxStorageBufferBindingSize)} storage-binding and ${megabytes(gpu.maxBufferSize)} buffer limits`;
    return { device: 'webgpu', dtype: choice.dtype, reason: [`WebGPU (${gpu.name} adapter): ${need}, ${within}.`, ...choice.notes].join(' ') };
}

// On WASM: a dtype whose graphs it can run (not_on_wasm: MatSlice's own bundles run everywhere, one rewritten
// elsewhere may need GatherBlockQuantized), and, unless the caller picked one, q8 over 4-bit: onnxruntime-web's WASM
// build has no 4-bit matrix kernel and unpacks every 4-bit weight on every call (a full-size variant decodes about
// 6x faster in q8: `matslice bench --only browser_full,browser_full_q8`).
function wasmDtype(manifest, choice, picked, info) {
    const blocked = (d) => info(d).not_on_wasm ?? [];
    const usable = manifest.dtypes.filter((d) => !blocked(d).length);
    let { dtype, reason } = choice;
    if (blocked(dtype).length && usable.length) {
        reason += ` ${dtype} needs WebGPU (${blocked(dtype).join(', ')} has no WASM kernel), so ${usable[0]} is used.`;
        dtype = usable[0];
    } else if (!usable.length) {
        reason += ` No dtype of this variant runs on WASM (${manifest.dtypes.flatMap(blocked).join(', ')}): rebuild it with --dtype q8.`;
    } else if (!picked && info(dtype).int4 && usable.includes('q8')) {
        reason += ` q8 is used rather than ${dtype}: WASM has no 4-bit matrix kernel and unpacks 4-bit weights on every call.`;
        dtype = 'q8';
    }
    return { device: 'wasm', dtype, reason: [reason, ...choice.notes].join(' ') };
}

// ---------------------------------------------------------------- runtime and checked fetch

let runtime = null;
const bundles = new Map(); // variant folder URL -> its manifest, progress and failures while it loads

/**
 * transformers.js, set up once per page: local files only, onnxruntime-web's WASM from vendor/, every bundle file
 * fetched through `checkedFetch`. The first load's device picks the onnxruntime-web build (one per page: a WebGPU
 * load that falls back to WASM keeps the asyncify build, which runs WASM too, only slower).
 */
export async function loadRuntime({ device = 'wasm', threads = null, proxy = false } = {}) {
    if (runtime) return runtime;
    let tf;
    try {
        tf = await import(`${VENDOR}transformers.min.js`);
    } catch (e) {
        throw new Error(`${VENDOR}transformers.min.js could not be loaded (${e.message}). Rebuild the site with nox -s build_web; it vendors the runtime from npm.`);
    }
    const isolated = typeof crossOriginIsolated !== 'undefined' && crossOriginIsolated;
    const build = RUNTIME_BUILDS[device];
    tf.env.allowRemoteModels = false;
    tf.env.allowLocalModels = true;
    tf.env.useBrowserCache = false; // the HTTP cache revalidates; a rebuilt model is never served stale
    tf.env.useWasmCache = false;
    tf.env.backends.onnx.wasm.wasmPaths = { mjs: `${VENDOR}${build}.mjs`, wasm: `${VENDOR}${build}.wasm` };
    tf.env.backends.onnx.wasm.numThreads = threads ?? (isolated ? Math.min(navigator.hardwareConcurrency || 1, 8) : 1);
    // proxy runs onnxruntime in a worker (WASM only): the tab stays responsive while a full-size model's session.run
    // takes seconds, but onnxruntime-web copies the model bytes into the worker (E0.40B: tab peak 2.9 -> 4.4 GB) and
    // messages cost a few ms a token, so it is off by default.
    tf.env.backends.onnx.wasm.proxy = device === 'wasm' && proxy;
    tf.env.fetch = checkedFetch;
    runtime = { tf, build, threads: tf.env.backends.onnx.wasm.numThreads, proxy: tf.env.backends.onnx.wasm.proxy, isolated };
    return runtime;
}

function bundleOf(url) {
    const href = new URL(String(url), typeof location === 'undefined' ? undefined : location.href).href;
    for (const [base, bundle] of bundles) {
        if (href.startsWith(base)) return { bundle, file: decodeURIComponent(href.slice(base.length).split('?')[0]) };
    }
    return { bundle: null, file: null };
}

/**
 * The fetch transformers.js uses: no byte of a bundle file reaches it unchecked. Each file is checked against
 * manifest.json's per-piece SHA-256 while it streams in; a Range request is widened to whole pieces, checked, and cut
 * back to what was asked. Other URLs (optional files transformers.js probes for) pass through.
 */
export async function checkedFetch(url, init) {
    const { bundle, file } = bundleOf(url);
    const record = bundle && bundle.manifest.files[file];
    if (!record) return fetchOrName(url, init, file ?? String(url), bundle);
    const where = `${bundle.manifest.url}${file}`;
    const range = init?.headers ? new Headers(init.headers).get('Range') : null;
    if (range) return checkedRange(bundle, url, init, where, record, range);
    const response = await fetchOrName(url, init, where, bundle);
    if (!response.ok) throw bundle.fail(new BundleFileError(where, `is missing on the server (HTTP ${response.status})`));
    return new Response(response.body.pipeThrough(verifier(bundle, where, record, 0)), {
        status: response.status, statusText: response.statusText, headers: response.headers,
    });
}

async function fetchOrName(url, init, where, bundle) {
    try {
        return await fetch(url, init);
    } catch (e) {
        const error = new BundleFileError(where, `could not be fetched (${e.message})`, 'Check that the server is running.');
        throw bundle ? bundle.fail(error) : error;
    }
}

async function checkedRange(bundle, url, init, where, record, range) {
    const match = /^bytes=(\d+)-(\d*)$/.exec(range.trim());
    if (!match) throw bundle.fail(new BundleFileError(where, `was asked for with a Range this loader does not check (${range})`));
    const first = Number(match[1]);
    const last = Math.min(match[2] === '' ? record.bytes - 1 : Number(match[2]), record.bytes - 1);
    const piece = bundle.manifest.piece_bytes;
    const start = Math.floor(first / piece) * piece;
    const stop = Math.min(record.bytes, (Math.floor(last / piece) + 1) * piece);
    const headers = new Headers(init.headers);
    headers.set('Range', `bytes=${start}-${stop - 1}`);
    const response = await fetchOrName(url, { ...init, headers }, where, bundle);
    if (!response.ok) throw bundle.fail(new BundleFileError(where, `is missing on the server (HTTP ${response.status})`));
    const whole = response.status === 200; // a server that ignores Range sends every byte: check them all
    const failures = bundle.failures.length;
    let checked;
    try {
        checked = await new Response(response.body.pipeThrough(verifier(bundle, where, record, whole ? 0 : start, whole ? record.bytes : stop))).arrayBuffer();
    } catch (e) { // a body that errored reads as "Failed to fetch": the verifier's own error says which bytes
        throw bundle.failures[failures] ?? e;
    }
    const offset = whole ? first : first - start;
    return new Response(checked.slice(offset, offset + last - first + 1), {
        status: 206, headers: { 'Content-Range': `bytes ${first}-${last}/${record.bytes}`, 'Content-Length': String(last - first + 1) },
    });
}

// Checks bytes [start, stop) of a file (start on a piece boundary) piece by piece as they pass: WebCrypto hashes whole
// buffers only, so one piece (manifest.json piece_bytes) is held at a time, never the file.
function verifier(bundle, where, record, start, stop = record.bytes) {
    const pieceBytes = bundle.manifest.piece_bytes;
    let index = start / pieceBytes;
    let buffer = new Uint8Array(Math.min(pieceBytes, stop - start));
    let filled = 0;
    let seen = 0;
    const check = async () => {
        if ((await sha256(buffer.subarray(0, filled))) !== record.pieces[index]) {
            throw bundle.fail(new BundleFileError(where, `is corrupt: bytes ${index * pieceBytes}-${index * pieceBytes + filled - 1} differ from manifest.json's SHA-256`));
        }
        index += 1;
        filled = 0;
        buffer = new Uint8Array(Math.max(0, Math.min(pieceBytes, stop - index * pieceBytes))); // empty after the last piece
    };
    return new TransformStream({
        async transform(chunk, controller) {
            seen += chunk.byteLength;
            if (seen > stop - start) {
                controller.error(bundle.fail(new BundleFileError(where, `is longer than manifest.json's ${record.bytes} bytes (replaced)`)));
                return;
            }
            for (let used = 0; used < chunk.byteLength;) {
                const take = Math.min(chunk.byteLength - used, buffer.byteLength - filled);
                buffer.set(chunk.subarray(used, used + take), filled);
                filled += take;
                used += take;
                if (filled === buffer.byteLength && buffer.byteLength) {
                    try { await check(); } catch (e) { controller.error(e); return; }
                }
            }
            bundle.progress(where, start + seen);
            controller.enqueue(chunk);
        },
        flush(controller) {
            if (seen !== stop - start) {
                controller.error(bundle.fail(new BundleFileError(where, `is ${start + seen} bytes but manifest.json says ${record.bytes} (truncated or replaced)`)));
            }
        },
    });
}

export async function sha256(bytes) {
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
    return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Bytes [start, end] of a bundle file fetched through the checked fetch, as their SHA-256, or the error (tests). */
export async function checkRange(manifest, file, span) {
    const bundle = track(manifest, () => {});
    try {
        const response = await checkedFetch(`${manifest.url}${file}`, { headers: { Range: `bytes=${span}` } });
        const bytes = new Uint8Array(await response.arrayBuffer());
        return { bytes: bytes.byteLength, sha256: await sha256(bytes), contentRange: response.headers.get('Content-Range') };
    } catch (e) {
        return { error: e.message };
    } finally {
        bundle.done();
    }
}

// A bundle being read: its manifest, what has arrived of which file (for onProgress), and the first failures, which
// name the file better than the error transformers.js rethrows.
function track(manifest, onProgress, total = 0) {
    const loaded = new Map();
    const bundle = {
        manifest, failures: [], current: '', rejectLoad: null,
        progress(file, bytes) {
            loaded.set(file, bytes);
            bundle.current = file;
            let sum = 0;
            for (const n of loaded.values()) sum += n;
            onProgress({ loaded: sum, total: Math.max(total, sum), file });
        },
        fail(error) {
            bundle.failures.push(error);
            bundle.rejectLoad?.(error); // transformers.js may never settle once a stream it reads errors
            return error;
        },
        // Settles (by rejecting) as soon as a bundle file fails its check, so loading cannot hang on it.
        failed() {
            const failed = new Promise((_, reject) => { bundle.rejectLoad = reject; });
            failed.catch(() => {});
            return failed;
        },
        done() { if (bundles.get(manifest.url) === bundle) bundles.delete(manifest.url); },
    };
    bundles.set(manifest.url, bundle);
    return bundle;
}

// ---------------------------------------------------------------- streamed embeddings

/**
 * The rows of a streamed bundle's row file (gemma3n/rows.py), fetched by HTTP Range a block at a time, each block
 * checked against the file's index and kept (in memory, and in the Cache API across visits). `stats` counts what
 * was fetched and from where, for the page and the benchmarks.
 */
export class RowStore {
    constructor(url, record, header, index, whole = null, note = null) {
        Object.assign(this, { url, record, header, index, whole, note });
        this.blocks = new Map();
        this.stats = { requests: 0, fetchedBytes: 0, fetchedBlocks: 0, cachedBlocks: 0, indexBytes: record.index_end };
    }

    /** Reads and checks the header and index; `record` is manifest.json's `rows` of the embed_tokens session. */
    static async open(manifest, record, { signal, wholeLimit = WHOLE_ROWS_LIMIT } = {}) {
        const url = `${manifest.url}${record.file}`;
        const response = await rangeFetch(url, 0, record.index_end, url, signal);
        let bytes;
        let whole = null;
        let note = null;
        if (response.status === 200) { // the host ignores Range: the whole file came back
            if (record.bytes > wholeLimit) {
                throw new BundleFileError(url, `was served whole (HTTP 200) for a Range request: the host ignores HTTP Range, and the file (${megabytes(record.bytes)}) is too large to hold in a tab (over ${megabytes(wholeLimit)})`, 'Serve the folder with a server that answers Range requests (nox -s serve, any static host, or the shipped _headers / .htaccess / vercel.json), or rebuild with --embeddings bundled.');
            }
            whole = new Uint8Array(await response.arrayBuffer());
            bytes = whole.subarray(0, record.index_end);
            note = `The host ignores HTTP Range: ${record.file} (${megabytes(record.bytes)}) was read whole.`;
        } else if (response.status === 206) {
            bytes = new Uint8Array(await response.arrayBuffer());
        } else {
            throw new BundleFileError(url, `is missing on the server (HTTP ${response.status})`);
        }
        const magic = new TextDecoder().decode(bytes.subarray(0, 8));
        if (magic !== ROWS_MAGIC) throw new BundleFileError(url, 'is not a MatSlice row file (wrong magic bytes)');
        const length = new DataView(bytes.buffer, bytes.byteOffset).getUint32(8, true);
        const header = JSON.parse(new TextDecoder().decode(bytes.subarray(12, 12 + length)));
        if (header.id !== record.id) {
            throw new BundleFileError(url, `belongs to another variant: its header's id ${header.id.slice(0, 12)}… is not manifest.json's ${record.id.slice(0, 12)}…`);
        }
        const index = bytes.slice(header.index_offset, header.index_offset + 32 * header.blocks);
        if ((await sha256(index)) !== header.id) throw new BundleFileError(url, 'is corrupt: its block index does not match its id');
        header.record_blocks = Math.ceil(header.vocab_size / header.records_per_block);
        const store = new RowStore(url, record, header, index, whole, note);
        if (whole) store.stats.fetchedBytes = whole.byteLength;
        return store;
    }

    blocksOf(id) { // the record's block, and for a vision or audio id the block of its hard row
        const h = this.header;
        const record = Math.floor(id / h.records_per_block);
        if (h.hard_start === null || id < h.hard_start) return [record];
        return [record, h.record_blocks + Math.floor((id - h.hard_start) / h.hard_per_block)];
    }

    blockSpan(block) { // [start, stop) of a block in the file
        const h = this.header;
        if (block < h.record_blocks) {
            const first = block * h.records_per_block;
            const count = Math.min(h.records_per_block, h.vocab_size - first);
            return [h.records_offset + first * h.record_bytes, h.records_offset + (first + count) * h.record_bytes];
        }
        const first = (block - h.record_blocks) * h.hard_per_block;
        const count = Math.min(h.hard_per_block, h.vocab_size - h.hard_start - first);
        const row = h.hidden_size * 4;
        return [h.hard_offset + first * row, h.hard_offset + (first + count) * row];
    }

    async checkBlock(block, bytes) {
        const digest = await crypto.subtle.digest('SHA-256', bytes);
        const want = this.index.subarray(32 * block, 32 * block + 32);
        const got = new Uint8Array(digest);
        if (!got.every((b, i) => b === want[i])) {
            const [start, stop] = this.blockSpan(block);
            throw new BundleFileError(this.url, `is corrupt: block ${block} (bytes ${start}-${stop - 1}) differs from the file's index`);
        }
        return bytes;
    }

    /** Makes sure the blocks holding `ids` are here: from memory, the Cache API, or the network (runs of adjacent
     * blocks in one Range request each, all requests at once). */
    async ensure(ids, signal) {
        const bad = ids.find((id) => !(id >= 0 && id < this.header.vocab_size));
        if (bad !== undefined) throw new Error(`token id ${bad} is outside the vocabulary (0-${this.header.vocab_size - 1})`);
        const wanted = [...new Set(Array.from(ids, (id) => this.blocksOf(id)).flat())].filter((b) => !this.blocks.has(b)).sort((a, b) => a - b);
        if (!wanted.length) return;
        const cache = await openCache();
        const missing = [];
        for (const block of wanted) {
            const hit = this.whole ? this.whole.slice(...this.blockSpan(block)) : await cacheGet(cache, this.cacheKey(block));
            if (hit) {
                this.blocks.set(block, await this.checkBlock(block, hit));
                if (!this.whole) this.stats.cachedBlocks += 1;
            } else {
                missing.push(block);
            }
        }
        const runs = [];
        for (const block of missing) {
            const run = runs.at(-1);
            if (run && run.at(-1) === block - 1) run.push(block); else runs.push([block]);
        }
        await Promise.all(runs.map((run) => this.fetchRun(run, cache, signal)));
    }

    async fetchRun(run, cache, signal) {
        const start = this.blockSpan(run[0])[0];
        const stop = this.blockSpan(run.at(-1))[1];
        const response = await rangeFetch(this.url, start, stop, this.url, signal);
        if (response.status !== 206) {
            throw new BundleFileError(this.url, `was answered with HTTP ${response.status} for a Range request (bytes ${start}-${stop - 1}): the host ${response.status === 200 ? 'stopped honouring HTTP Range' : 'lost the file'}`);
        }
        const bytes = new Uint8Array(await response.arrayBuffer());
        if (bytes.byteLength !== stop - start) {
            throw new BundleFileError(this.url, `returned ${bytes.byteLength} bytes for a Range of ${stop - start} (truncated or replaced)`);
        }
        this.stats.requests += 1;
        this.stats.fetchedBytes += bytes.byteLength;
        for (const block of run) {
            const [a, b] = this.blockSpan(block);
            const checked = await this.checkBlock(block, bytes.slice(a - start, b - start));
            this.blocks.set(block, checked);
            this.stats.fetchedBlocks += 1;
            await cachePut(cache, this.cacheKey(block), checked);
        }
    }

    cacheKey(block) {
        return `${this.url}?id=${this.header.id}&block=${block}`;
    }

    /** inputs_embeds [n, H] and per_layer_inputs [n, L*P] of `ids` (numbers), as the embed_tokens session computes
     * them: (code - offset) * scale, then * embed_scale, each product rounded to float32. */
    embed(ids) {
        const h = this.header;
        const perLayer = h.layers * h.per_layer_size;
        const embeds = new Float32Array(ids.length * h.hidden_size);
        const layers = new Float32Array(ids.length * perLayer);
        ids.forEach((id, n) => {
            const record = this.recordOf(id);
            decodeRow(record, h.text, embeds, n * h.hidden_size);
            decodeRow(record, h.per_layer, layers, n * perLayer);
            if (h.hard_start !== null && id >= h.hard_start) {
                const block = this.blocksOf(id)[1];
                const row = (id - h.hard_start) % h.hard_per_block;
                const bytes = this.blocks.get(block);
                const floats = new Float32Array(bytes.buffer.slice(bytes.byteOffset + row * h.hidden_size * 4, bytes.byteOffset + (row + 1) * h.hidden_size * 4));
                embeds.set(floats, n * h.hidden_size);
            }
        });
        return { embeds, layers };
    }

    recordOf(id) { // the record of `id` (its per-layer row is the one the session reads for it)
        const h = this.header;
        const block = this.blocks.get(Math.floor(id / h.records_per_block));
        if (!block) throw new Error(`row ${id} was not fetched`);
        const at = (id % h.records_per_block) * h.record_bytes;
        return block.subarray(at, at + h.record_bytes);
    }
}

const OFFSET = { 4: 8, 8: 128 };

function decodeRow(record, table, out, at) {
    const view = new DataView(record.buffer, record.byteOffset, record.byteLength);
    const scale = Math.fround(table.scale);
    if (table.bits === null) {
        for (let c = 0; c < table.columns; c++) out[at + c] = Math.fround(view.getFloat32(table.codes_at + 4 * c, true) * scale);
        return;
    }
    const offset = OFFSET[table.bits];
    for (let block = 0; block < table.columns / table.block; block++) {
        const blockScale = view.getFloat32(table.scales_at + 4 * block, true);
        for (let k = 0; k < table.block; k++) {
            const c = block * table.block + k;
            const code = table.bits === 8 ? record[table.codes_at + c]
                : (record[table.codes_at + (c >> 1)] >> ((c & 1) * 4)) & 0x0f;
            out[at + c] = Math.fround(Math.fround((code - offset) * blockScale) * scale);
        }
    }
}

async function rangeFetch(url, start, stop, where, signal) {
    try {
        return await fetch(url, { headers: { Range: `bytes=${start}-${stop - 1}` }, signal, cache: 'no-store' });
    } catch (e) {
        throw new BundleFileError(where, `could not be fetched (${e.message})`, 'Check that the server is running.');
    }
}

async function openCache() {
    try {
        return typeof caches === 'undefined' ? null : await caches.open(ROWS_CACHE);
    } catch {
        return null; // no Cache API here (an insecure origin, a private window): rows stay in memory only
    }
}

async function cacheGet(cache, key) {
    const hit = cache && await cache.match(key);
    return hit ? new Uint8Array(await hit.arrayBuffer()) : null;
}

async function cachePut(cache, key, bytes) {
    try {
        await cache?.put(key, new Response(bytes));
    } catch { /* a full cache costs a refetch next visit, nothing else */ }
}

/** What stands in for the embed_tokens session of a streamed bundle: the same inputs and outputs, computed from
 * the rows of the ids asked for (fetched together, before any is decoded). */
export class RowSession {
    constructor(tf, store) {
        this.tf = tf;
        this.store = store;
        this.inputNames = ['input_ids'];
        this.outputNames = ['inputs_embeds', 'per_layer_inputs'];
        this.config = { streamed: true, rows: store.record.file };
    }

    async run(feeds) {
        const ids = feeds.input_ids;
        const numbers = Array.from(ids.data, Number);
        await this.store.ensure(numbers);
        const { embeds, layers } = this.store.embed(numbers);
        const [batch, length] = ids.dims;
        const h = this.store.header;
        // transformers.js Tensors, as its sessionRun returns them. Not enumerable: sessionRun walks a session's
        // outputs to wrap onnxruntime tensors, and would walk every element of these.
        return Object.defineProperties({}, {
            inputs_embeds: { value: new this.tf.Tensor('float32', embeds, [batch, length, h.hidden_size]) },
            per_layer_inputs: { value: new this.tf.Tensor('float32', layers, [batch, length, h.layers, h.per_layer_size]) },
        });
    }

    async release() {}
}

// ---------------------------------------------------------------- loading

/** Every file a load of `sessions` at `dtype` downloads (row files excepted: their rows come as needed). */
export function filesToDownload(manifest, dtype, sessions) {
    const onnx = new Set(sessions.flatMap((s) => [manifest.sessions[s][dtype].file, ...manifest.sessions[s][dtype].data_files]));
    return Object.entries(manifest.files).filter(([name]) => !name.startsWith('onnx/') || onnx.has(name));
}

/**
 * Load the variant at `variantUrl` (the folder holding manifest.json). Resolves to {tokenizer, model, generate,
 * processor (audio only), manifest, device, dtype, reason, runtime, rows (streamed bundles), loadMs}.
 * options: device ('webgpu' | 'wasm': forced), dtype (kept once picked), withAudio (every session, and the
 * processor), onProgress({loaded, total, file}), signal (AbortSignal), threads, proxy, wholeRowsLimit (the largest
 * row file read whole from a host that ignores Range; default WHOLE_ROWS_LIMIT).
 */
export async function loadVariant(variantUrl, options = {}) {
    const { withAudio = false, onProgress = () => {}, signal } = options;
    const started = performance.now();
    const manifest = options.manifest ?? await readManifest(variantUrl);
    let backend = options.backend ?? await chooseBackend(manifest, options);
    const { dtype } = backend;
    const sessions = sessionsFor(manifest, withAudio);
    const total = filesToDownload(manifest, dtype, sessions).reduce((sum, [, record]) => sum + record.bytes, 0);
    const bundle = track(manifest, onProgress, total);
    const aborted = new Promise((_, reject) => signal?.addEventListener('abort', () => reject(signal.reason ?? new Error('Loading was aborted.'))));
    aborted.catch(() => {});
    const rt = await loadRuntime({ device: backend.device, threads: options.threads, proxy: options.proxy });
    const attempt = (device) => Promise.race([loadModel(rt.tf, manifest, dtype, device, { withAudio, signal, bundle, wholeLimit: options.wholeRowsLimit }), bundle.failed(), aborted]);
    let loaded;
    try {
        try {
            loaded = await attempt(backend.device);
        } catch (e) {
            if (backend.device !== 'webgpu' || bundle.failures.length || signal?.aborted) throw e;
            backend = { ...backend, device: 'wasm', reason: `WebGPU failed while loading (${e.message}); fell back to WASM.` };
            loaded = await attempt('wasm');
        }
    } catch (e) {
        throw bundle.failures[0] ?? (signal?.aborted ? e : new Error(describeLoadError(e, bundle, manifest, backend.device, dtype)));
    } finally {
        bundle.done();
    }
    const result = { ...loaded, manifest, device: backend.device, dtype, reason: backend.reason, runtime: rt };
    result.generate = (prompt, generateOptions) => generate(result, prompt, generateOptions);
    result.loadMs = performance.now() - started;
    return result;
}

async function loadModel(tf, manifest, dtype, device, { withAudio, signal, bundle, wholeLimit }) {
    // transformers.js reads a model id that is not a hub id ("owner/name") as a path on this origin; a URL would be a
    // remote model, which this loader never allows. So the variant's path, from its leading slash.
    if (typeof location !== 'undefined' && new URL(manifest.url).origin !== location.origin) {
        throw new Error(`${manifest.url} is on another origin than this page: serve the variant from ${location.origin} (a cross-origin-isolated page loads nothing from elsewhere).`);
    }
    const id = new URL(manifest.url).pathname.replace(/\/$/, '');
    const options = { dtype, device };
    let processor = null;
    let tokenizer;
    let model;
    if (withAudio) {
        processor = await tf.AutoProcessor.from_pretrained(id);
        tokenizer = processor.tokenizer;
        model = await tf.Gemma3nForConditionalGeneration.from_pretrained(id, options);
    } else {
        tokenizer = await tf.AutoTokenizer.from_pretrained(id);
        model = await tf.Gemma3nForCausalLM.from_pretrained(id, options);
    }
    let rows = null;
    const streamed = manifest.sessions.embed_tokens[dtype].rows;
    if (streamed) {
        try {
            rows = await RowStore.open(manifest, streamed, { signal, wholeLimit });
        } catch (e) {
            throw e instanceof BundleFileError ? bundle.fail(e) : e; // a file's fault: no other backend would help
        }
        await model.sessions.embed_tokens.release?.(); // the stand-in graph: it only names the row file
        model.sessions.embed_tokens = new RowSession(tf, rows);
    }
    const chatTemplate = await readChatTemplate(manifest, tokenizer);
    return { tokenizer, processor, model, rows, chatTemplate };
}

// A bare tokenizer only reads tokenizer_config.json's chat_template; Gemma 3n ships chat_template.jinja.
async function readChatTemplate(manifest, tokenizer) {
    if (tokenizer.chat_template || !manifest.files['chat_template.jinja']) return undefined;
    const response = await checkedFetch(`${manifest.url}chat_template.jinja`);
    return response.text();
}

function describeLoadError(error, bundle, manifest, device, dtype) {
    // transformers.js does not say which session failed: the last model file read, else the variant's onnx/ folder
    const last = bundle.current ?? '';
    const file = last.includes('/onnx/') ? last.replace(/\.onnx_data(_\d+)?$/, '.onnx') : `${manifest.url}onnx/`;
    const text = String(error?.message ?? error);
    const op = text.match(/Could not find an implementation for (\w+)/);
    if (op) {
        return `onnxruntime-web's ${device.toUpperCase()} backend has no ${op[1]} kernel, which this ${dtype} bundle `
            + `(${manifest.url}onnx/) uses: ${text}. Pick another dtype or variant, or use a browser with WebGPU.`;
    }
    if (/protobuf|parse|Can't create a session|external data|failed to load model/i.test(text)) {
        return `Model file ${file} (or its .onnx_data) could not be read by onnxruntime: ${text}. ${REBUILD}`;
    }
    return `Loading ${manifest.url} failed while reading ${file}: ${text}. ${REBUILD}`;
}

// ---------------------------------------------------------------- generation

/** The model inputs for a prompt: a string (with the chat template when the bundle has one, unless `raw`), a list
 * of chat messages, or token ids. Audio goes with `audio` (loaded withAudio). */
export async function promptInputs(loaded, prompt, { raw = false, audio = null } = {}) {
    const { tf } = loaded.runtime;
    if (Array.isArray(prompt) && typeof prompt[0] === 'number') {
        const ids = BigInt64Array.from(prompt, BigInt);
        return { input_ids: new tf.Tensor('int64', ids, [1, ids.length]), attention_mask: new tf.Tensor('int64', new BigInt64Array(ids.length).fill(1n), [1, ids.length]) };
    }
    const messages = typeof prompt === 'string' ? [{ role: 'user', content: prompt }] : prompt;
    if (audio) {
        const text = loaded.processor.apply_chat_template(messages, { add_generation_prompt: true, tokenize: false });
        return loaded.processor(text, null, audio);
    }
    if (raw || (!loaded.tokenizer.chat_template && !loaded.chatTemplate)) {
        return loaded.tokenizer(typeof prompt === 'string' ? prompt : messages.at(-1).content);
    }
    return loaded.tokenizer.apply_chat_template(messages, { add_generation_prompt: true, return_dict: true, chat_template: loaded.chatTemplate });
}

/**
 * Greedy generation with streamed text: resolves to {text, promptIds, newIds, firstTokenMs, tokensPerSecond, tokens,
 * rows (streamed bundles: what the row file served)}. options: maxNewTokens (64), onText(piece, text), onToken(stats),
 * raw, audio.
 */
export async function generate(loaded, prompt, { maxNewTokens = 64, onText = () => {}, onToken = () => {}, raw = false, audio = null } = {}) {
    const { tf } = loaded.runtime;
    const inputs = await promptInputs(loaded, prompt, { raw, audio });
    const times = [];
    let text = '';
    const before = loaded.rows ? { ...loaded.rows.stats } : null;
    const started = performance.now();
    const streamer = new tf.TextStreamer(loaded.tokenizer, {
        skip_prompt: true,
        skip_special_tokens: true,
        callback_function: (piece) => { text += piece; onText(piece, text); },
        token_callback_function: () => { times.push(performance.now()); onToken(timing(started, times)); },
    });
    const output = await loaded.model.generate({ ...inputs, max_new_tokens: maxNewTokens, do_sample: false, streamer });
    const promptIds = Array.from(inputs.input_ids.data, Number);
    const newIds = Array.from(output.data, Number).slice(promptIds.length);
    const rows = before && Object.fromEntries(Object.entries(loaded.rows.stats).map(([k, v]) => [k, v - before[k]]));
    return { text, promptIds, newIds, ...timing(started, times), rows, device: loaded.device, dtype: loaded.dtype };
}

export function timing(started, times) {
    const firstTokenMs = times.length ? times[0] - started : null;
    const tokensPerSecond = times.length > 1 ? (times.length - 1) / ((times.at(-1) - times[0]) / 1000) : null;
    return { firstTokenMs, tokensPerSecond, tokens: times.length };
}
