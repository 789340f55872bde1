// MatSlice browser page: pick a sliced Gemma 3n variant, check the backend against its manifest, load it with
// transformers.js from this origin only, and chat with streamed output.
//
// Why it is shaped like this:
// * every byte comes from this origin: transformers.js and the onnxruntime-web WASM files live in vendor/,
//   models in models/ (env.allowRemoteModels = false, wasmPaths pointed at vendor/);
// * the backend is decided before any download: WebGPU only when an adapter exists, has what the dtype needs
//   (shader-f16 for fp16 arithmetic) and its buffer limits hold the largest tensor of the sessions and dtype
//   being loaded (manifest.json), else WASM (its fast, WebGPU-less build), with the reason on the page;
// * every model file is fetched through env.fetch, which checks it against manifest.json (HTTP status, size,
//   per-piece SHA-256, Range requests widened to whole pieces), so a missing or corrupt file is named in the page;
// * text chat loads Gemma3nForCausalLM (embed_tokens + decoder only); audio needs
//   Gemma3nForConditionalGeneration, which also loads the vision encoder, so it is opt-in and its cost shown.
// window.matslice exposes state and the last run's token ids for tests/website/test_browser.py.

// What each dtype needs comes from models.json's dtypes table (gemma3n/dtypes.py): needs_shader_f16 (onnxruntime-web
// fails at the first WebGPU run without the feature: "Program Gather requires f16 but the device does not support
// it"; transformers.js refuses fp16 at load) and int4 (4-bit matrix weights).
const dtypeInfo = (dtype) => state.models.dtypes[dtype] ?? {};
// onnxruntime-web builds: the asyncify build carries the WebGPU execution provider; the plain build is WASM only and
// runs the CPU kernels without asyncify's instrumentation (several times faster per token).
const RUNTIME_BUILDS = { webgpu: 'ort-wasm-simd-threaded.asyncify', wasm: 'ort-wasm-simd-threaded' };
const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);

const state = {
    models: null, variant: null, manifest: null, backend: null, tf: null,
    model: null, tokenizer: null, processor: null, withAudio: false, audio: null,
    history: [], busy: false, loadFailures: [],
};
window.matslice = {
    ready: false, loading: false, error: null, backend: null, backendReason: null, adapter: null, runtime: null,
    sessions: null, loadMs: null, runs: [], lastRun: null,
};

class BundleFileError extends Error {
    constructor(file, problem, fix) {
        super(`Model file ${file} ${problem}. ${fix}`);
        this.file = file;
    }
}

const REBUILD = 'Rebuild this variant (nox -s build_web) and copy the whole models/ folder to your host again.';

function mb(bytes) {
    return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(bytes < 1e7 ? 2 : 1)} MB`;
}

function count(n) {
    if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
    if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
    if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
    return String(n);
}

function showError(message) {
    const box = $('error');
    box.textContent = message;
    box.hidden = false;
    window.matslice.error = message;
}

function clearError() {
    $('error').hidden = true;
    window.matslice.error = null;
}

// ---------------------------------------------------------------- variants

async function readModels() {
    let response;
    try {
        response = await fetch('models.json', { cache: 'no-cache' });
    } catch (e) {
        throw new Error(`models.json could not be fetched (${e.message}). Serve this folder over HTTP (nox -s serve).`);
    }
    if (!response.ok) {
        throw new Error(`models.json: HTTP ${response.status}. Build the site with nox -s build_web and serve dist/web.`);
    }
    return response.json();
}

function variantCard(v) {
    const card = document.createElement('div');
    card.className = 'variant';
    card.setAttribute('role', 'radio');
    card.tabIndex = 0;
    card.dataset.id = v.id;
    const bytes = v.bytes[v.default_dtype];
    const slice = v.slice
        ? `${v.slice.kept_layers.length} layers (skips ${v.slice.skipped_layers.join(', ') || 'none'}), FFN ${summarizeDims(v.slice.ffn_dims)}`
        : 'parent (unsliced)';
    const rows = [
        ['slice', slice],
        ['effective params', count(v.params.effective_published)],
        ['text params', count(v.params.text)],
        ['total params', count(v.params.total)],
        ['download (text)', `${mb(bytes.text)} ${v.default_dtype}`],
        ['modalities', v.audio ? 'text, audio' : 'text'],
    ];
    const vocab = v.slice?.vocab;
    if (vocab) {
        const from = vocab.corpus.map((c) => c.name.split('/').pop()).join(', ');
        rows.push(['vocabulary', `${vocab.kept_text_ids.toLocaleString('en')} of ${vocab.parent_text_ids.toLocaleString('en')} tokens, from: ${from}`]);
    }
    card.innerHTML = `<h3></h3><dl></dl>`;
    card.querySelector('h3').textContent = v.label;
    if (v.parent) card.querySelector('h3').insertAdjacentHTML('beforeend', '<span class="tag">parent</span>');
    const dl = card.querySelector('dl');
    for (const [k, val] of rows) {
        const dt = document.createElement('dt');
        dt.textContent = k;
        const dd = document.createElement('dd');
        dd.textContent = val;
        dl.append(dt, dd);
    }
    card.addEventListener('click', () => selectVariant(v.id));
    card.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') selectVariant(v.id); });
    return card;
}

function summarizeDims(dims) {
    const unique = [...new Set(dims)];
    return unique.length === 1 ? `${unique[0]} (all)` : dims.join(', ');
}

function renderVariants() {
    const box = $('variants');
    box.replaceChildren(...state.models.variants.map(variantCard));
    if (!state.models.variants.length) box.textContent = 'models.json lists no variants: rebuild with nox -s build_web.';
}

async function selectVariant(id) {
    if (state.busy || window.matslice.ready) return;
    clearError();
    const v = state.models.variants.find((x) => x.id === id);
    if (!v) {
        showError(`models.json has no variant ${id}: pick one of ${state.models.variants.map((x) => x.id).join(', ')}.`);
        return;
    }
    state.variant = v;
    for (const card of document.querySelectorAll('.variant')) card.setAttribute('aria-checked', String(card.dataset.id === id));
    $('dtype').replaceChildren(...v.dtypes.map((d) => new Option(d, d, d === v.default_dtype, d === v.default_dtype)));
    $('audio-option').hidden = !v.audio;
    $('with-audio').checked = false;
    state.dtypePicked = params.has('dtype');
    if (state.dtypePicked && v.dtypes.includes(params.get('dtype'))) $('dtype').value = params.get('dtype');
    updateAudioCost();
    $('load').disabled = true;
    try {
        state.manifest = await fetchJSON(`${v.path}manifest.json`);
        await settleBackend();
    } catch (e) {
        showError(e.message);
    }
}

function updateAudioCost() {
    const v = state.variant;
    if (!v) return;
    const dtype = $('dtype').value || v.default_dtype;
    const b = v.bytes[dtype];
    $('audio-cost').textContent = `(+${mb(b.all - b.text)}: the audio and vision encoders, ${mb(b.all)} in all)`;
}

async function fetchJSON(path) {
    const response = await fetch(path, { cache: 'no-cache' });
    if (!response.ok) {
        throw new BundleFileError(path, `is missing (HTTP ${response.status})`, REBUILD);
    }
    try {
        return await response.json();
    } catch {
        throw new BundleFileError(path, 'is not valid JSON', REBUILD);
    }
}

// ---------------------------------------------------------------- backend

// What this browser's WebGPU offers, asked once: the adapter's limits and features, or why there is none.
async function webgpu() {
    if (state.webgpu) return state.webgpu;
    let adapter = null;
    let missing = null;
    if (!('gpu' in navigator)) {
        missing = 'This browser has no WebGPU (navigator.gpu is missing)';
    } else {
        try {
            adapter = await navigator.gpu.requestAdapter();
        } catch { /* treated as no adapter */ }
        if (!adapter) missing = 'WebGPU found no usable GPU adapter (disabled or blocklisted)';
    }
    if (missing) {
        state.webgpu = { missing };
        return state.webgpu;
    }
    const info = adapter.info ?? {};
    state.webgpu = {
        vendor: info.vendor ?? '', architecture: info.architecture ?? '', fallback: Boolean(info.isFallbackAdapter),
        shaderF16: adapter.features.has('shader-f16'), maxBufferSize: adapter.limits.maxBufferSize,
        maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
    };
    state.webgpu.name = [state.webgpu.vendor, state.webgpu.architecture].filter(Boolean).join(' ') || 'unnamed';
    window.matslice.adapter = state.webgpu;
    return state.webgpu;
}

function loadSessions(withAudio) {
    return withAudio ? Object.keys(state.manifest.sessions) : state.variant.text_sessions;
}

// The largest tensor this load puts in one GPU buffer: over the sessions it loads, in the dtype it loads only.
function largestTensor(dtype, sessions) {
    let largest = null;
    for (const session of sessions) {
        const tensor = state.manifest.sessions[session][dtype].largest_tensor;
        if (!largest || tensor.bytes > largest.bytes) largest = { ...tensor, session };
    }
    return largest;
}

// The backend for the chosen variant, dtype and sessions, and the reason the page shows. A dtype the user picked
// stays and the backend moves; the default dtype moves instead when another one suits the backend better.
async function decideBackend() {
    const v = state.variant;
    let dtype = $('dtype').value;
    const sessions = loadSessions(v.audio && $('with-audio').checked);
    const onWasm = (reason) => onWasmBackend(v, { device: 'wasm', reason });
    if (params.get('backend') === 'wasm') return onWasm('WASM chosen by ?backend=wasm.');
    const gpu = await webgpu();
    if (gpu.missing) return onWasm(`${gpu.missing}; running on the CPU with WASM.`);
    const notes = [];
    if (dtypeInfo(dtype).needs_shader_f16 && !gpu.shaderF16) {
        const lacks = `${dtype} needs the WebGPU feature shader-f16, which the ${gpu.name} adapter lacks`;
        const other = v.dtypes.find((d) => !dtypeInfo(d).needs_shader_f16);
        if (state.dtypePicked || !other) return onWasm(`${lacks}, so ${dtype} runs on the CPU with WASM.`);
        notes.push(`${lacks}, so ${other} is used.`);
        dtype = other;
        $('dtype').value = other;
    }
    const largest = largestTensor(dtype, sessions);
    const need = `the largest ${dtype} tensor it loads, ${largest.name} in ${largest.session}, is ${mb(largest.bytes)}`;
    const limits = [[gpu.maxStorageBufferBindingSize, 'storage-buffer binding'], [gpu.maxBufferSize, 'buffer']];
    for (const [limit, what] of limits) {
        if (largest.bytes > limit) {
            return onWasm(`The ${gpu.name} adapter allows ${mb(limit)} per ${what} but ${need}; running on the CPU with WASM.`);
        }
    }
    const within = `within its ${mb(gpu.maxStorageBufferBindingSize)} storage-binding and ${mb(gpu.maxBufferSize)} buffer limits`;
    return { device: 'webgpu', reason: [`WebGPU (${gpu.name} adapter): ${need}, ${within}.`, ...notes].join(' ') };
}

// On WASM: a dtype whose graphs it can run (models.json not_on_wasm: MatSlice's own bundles run everywhere, one
// made elsewhere may need GatherBlockQuantized), and, unless the user picked one, q8 over 4-bit: onnxruntime-web's
// WASM build has no 4-bit matrix kernel and unpacks every 4-bit weight on every call (a full-size variant decodes
// about 6x faster in q8: `matslice bench --only browser_full,browser_full_q8`).
function onWasmBackend(v, backend) {
    const blocked = v.not_on_wasm ?? {};
    const usable = v.dtypes.filter((d) => !(blocked[d] ?? []).length);
    const chosen = $('dtype').value;
    if ((blocked[chosen] ?? []).length && usable.length) {
        $('dtype').value = usable[0];
        backend.reason += ` ${chosen} needs WebGPU (${blocked[chosen].join(', ')} has no WASM kernel), so ${usable[0]} is used.`;
    } else if (!usable.length) {
        backend.reason += ` No dtype of this variant runs on WASM (${Object.values(blocked).flat().join(', ')}): rebuild it with --dtype q8.`;
    } else if (!state.dtypePicked && dtypeInfo(chosen).int4 && usable.includes('q8')) {
        $('dtype').value = 'q8';
        backend.reason += ` q8 is used rather than ${chosen}: WASM has no 4-bit matrix kernel and unpacks 4-bit weights on every call.`;
    }
    return backend;
}

// Picks the backend for what is selected now and shows it; Load waits for it (playwright's click does too).
async function settleBackend() {
    $('load').disabled = true;
    updateAudioCost();
    state.backend = await decideBackend();
    updateAudioCost();
    showBackend(state.backend);
    $('load').disabled = false;
}

async function dtypeChanged() {
    state.dtypePicked = true;
    if (!state.manifest || window.matslice.ready || state.busy) return;
    await settleBackend();
}

function showBackend(backend) {
    const line = $('backend');
    line.textContent = `Backend: ${backend.device === 'webgpu' ? 'WebGPU' : 'WASM'}. ${backend.reason}`;
    line.className = `backend ${backend.device === 'webgpu' ? 'ok' : 'warn'}`;
    window.matslice.backend = backend.device;
    window.matslice.backendReason = line.textContent;
}

function showIsolation() {
    const threads = crossOriginIsolated ? Math.min(navigator.hardwareConcurrency || 1, 8) : 1;
    $('isolation').textContent = crossOriginIsolated
        ? `Cross-origin isolated: WASM runs with ${threads} threads.`
        : 'Not cross-origin isolated: WASM runs single-threaded. Serve with COOP/COEP headers (nox -s serve, or the shipped _headers file).';
    return threads;
}

// ---------------------------------------------------------------- runtime and checked fetch

async function loadRuntime(threads, device) {
    let tf;
    try {
        tf = await import('./vendor/transformers.min.js');
    } catch (e) {
        throw new Error(`vendor/transformers.min.js could not be loaded (${e.message}). Rebuild the site with nox -s build_web; it vendors the runtime from npm.`);
    }
    const vendor = new URL('vendor/', location.href).href;
    tf.env.allowRemoteModels = false;
    tf.env.allowLocalModels = true;
    tf.env.localModelPath = new URL('./', location.href).pathname;
    tf.env.useBrowserCache = false; // the HTTP cache revalidates; a rebuilt model is never served stale
    tf.env.useWasmCache = false;
    // One onnxruntime-web build per page: it is loaded with the first session. A WebGPU load that falls back to WASM
    // keeps the asyncify build (it runs WASM too, only slower).
    const build = RUNTIME_BUILDS[device];
    tf.env.backends.onnx.wasm.wasmPaths = { mjs: `${vendor}${build}.mjs`, wasm: `${vendor}${build}.wasm` };
    tf.env.backends.onnx.wasm.numThreads = threads;
    // ?proxy=1 runs onnxruntime in a worker (WASM only): the tab stays responsive while a full-size model's
    // session.run takes seconds, but onnxruntime-web copies the model bytes into the worker (E0.40B: tab peak 2.9 ->
    // 4.4 GB) and messages cost a few ms a token, so it is off by default; running transformers.js itself in a
    // worker avoids both (the bytes are fetched there).
    const proxy = device === 'wasm' && params.get('proxy') === '1';
    tf.env.backends.onnx.wasm.proxy = proxy;
    window.matslice.runtime = { build, threads, proxy };
    tf.env.fetch = checkedFetch;
    return tf;
}

const progress = { total: 0, loaded: new Map(), current: '' };

function bundleFile(url) {
    const path = new URL(url, location.href).pathname;
    const base = new URL(state.variant.path, location.href).pathname;
    return path.startsWith(base) ? decodeURIComponent(path.slice(base.length)) : null;
}

// The fetch transformers.js uses: no byte of a bundle file reaches it unchecked. Each file is checked against
// manifest.json's per-piece SHA-256 while it streams in; a Range request is widened to whole pieces, checked, and cut
// back to what was asked. A missing, truncated or corrupt file is named in the page with what to do.
async function checkedFetch(url, init) {
    const file = bundleFile(String(url));
    const record = file && state.manifest.files[file];
    if (!record) return fetchOrName(url, init, file ?? String(url)); // optional files transformers.js probes for
    const where = `${state.variant.path}${file}`;
    const range = init?.headers ? new Headers(init.headers).get('Range') : null;
    if (range) return checkedRange(url, init, where, record, range);
    const response = await fetchOrName(url, init, where);
    if (!response.ok) throw remember(new BundleFileError(where, `is missing on the server (HTTP ${response.status})`, REBUILD));
    return new Response(response.body.pipeThrough(verifier(where, record, 0)), {
        status: response.status, statusText: response.statusText, headers: response.headers,
    });
}

async function fetchOrName(url, init, where) {
    try {
        return await fetch(url, init);
    } catch (e) {
        throw remember(new BundleFileError(where, `could not be fetched (${e.message})`, 'Check that the server is running.'));
    }
}

async function checkedRange(url, init, where, record, range) {
    const match = /^bytes=(\d+)-(\d*)$/.exec(range.trim());
    if (!match) throw remember(new BundleFileError(where, `was asked for with a Range this page does not check (${range})`, REBUILD));
    const first = Number(match[1]);
    const last = Math.min(match[2] === '' ? record.bytes - 1 : Number(match[2]), record.bytes - 1);
    const piece = state.manifest.piece_bytes;
    const start = Math.floor(first / piece) * piece;
    const stop = Math.min(record.bytes, (Math.floor(last / piece) + 1) * piece);
    const headers = new Headers(init.headers);
    headers.set('Range', `bytes=${start}-${stop - 1}`);
    const response = await fetchOrName(url, { ...init, headers }, where);
    if (!response.ok) throw remember(new BundleFileError(where, `is missing on the server (HTTP ${response.status})`, REBUILD));
    const whole = response.status === 200; // a server that ignores Range sends every byte: check them all
    const failures = state.loadFailures.length;
    let checked;
    try {
        checked = await new Response(response.body.pipeThrough(verifier(where, record, whole ? 0 : start, whole ? record.bytes : stop))).arrayBuffer();
    } catch (e) { // a body that errored reads as "Failed to fetch": the verifier's own error says which bytes
        throw state.loadFailures[failures] ?? e;
    }
    const offset = whole ? first : first - start;
    return new Response(checked.slice(offset, offset + last - first + 1), {
        status: 206, headers: { 'Content-Range': `bytes ${first}-${last}/${record.bytes}`, 'Content-Length': String(last - first + 1) },
    });
}

// For tests: bytes [start, end] of a bundle file fetched through the checked fetch, as their SHA-256, or the error.
window.matslice.checkRange = async (file, span) => {
    try {
        const response = await checkedFetch(file, { headers: { Range: `bytes=${span}` } });
        const bytes = new Uint8Array(await response.arrayBuffer());
        return { bytes: bytes.byteLength, sha256: await sha256(bytes), contentRange: response.headers.get('Content-Range') };
    } catch (e) {
        return { error: e.message };
    }
};

function remember(error) {
    state.loadFailures.push(error);
    state.rejectLoad?.(error); // transformers.js may never settle once a stream it reads errors
    return error;
}

// Settles (by rejecting) as soon as a bundle file fails its check, so loading cannot hang on it.
function loadFailureSignal() {
    const failed = new Promise((_, reject) => { state.rejectLoad = reject; });
    failed.catch(() => {});
    return failed;
}

// Checks bytes [start, stop) of a file (start on a piece boundary) piece by piece as they pass: WebCrypto hashes whole
// buffers only, so one piece (manifest.json piece_bytes) is held at a time, never the file.
function verifier(where, record, start, stop = record.bytes) {
    const pieceBytes = state.manifest.piece_bytes;
    let index = start / pieceBytes;
    let buffer = new Uint8Array(Math.min(pieceBytes, stop - start));
    let filled = 0;
    let seen = 0;
    const check = async () => {
        if ((await sha256(buffer.subarray(0, filled))) !== record.pieces[index]) {
            throw remember(new BundleFileError(where, `is corrupt: bytes ${index * pieceBytes}-${index * pieceBytes + filled - 1} differ from manifest.json's SHA-256`, REBUILD));
        }
        index += 1;
        filled = 0;
        buffer = new Uint8Array(Math.max(0, Math.min(pieceBytes, stop - index * pieceBytes))); // empty after the last piece
    };
    return new TransformStream({
        async transform(chunk, controller) {
            seen += chunk.byteLength;
            if (seen > stop - start) {
                controller.error(remember(new BundleFileError(where, `is longer than manifest.json's ${record.bytes} bytes (replaced)`, REBUILD)));
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
            progress.loaded.set(where, start + seen);
            progress.current = where;
            showProgress();
            controller.enqueue(chunk);
        },
        flush(controller) {
            if (seen !== stop - start) {
                controller.error(remember(new BundleFileError(where, `is ${start + seen} bytes but manifest.json says ${record.bytes} (truncated or replaced)`, REBUILD)));
            }
        },
    });
}

async function sha256(bytes) {
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
    return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

function showProgress() {
    let loaded = 0;
    for (const n of progress.loaded.values()) loaded += n;
    const total = Math.max(progress.total, loaded, 1);
    $('progress').value = loaded / total;
    $('progress-text').textContent = `${mb(loaded)} of ${mb(total)}: ${progress.current}`;
}

// ---------------------------------------------------------------- loading

function filesToDownload(manifest, dtype, withAudio) {
    const sessions = withAudio ? Object.keys(manifest.sessions) : state.variant.text_sessions;
    const onnx = new Set(sessions.flatMap((s) => [manifest.sessions[s][dtype].file, ...manifest.sessions[s][dtype].data_files]));
    return Object.entries(manifest.files).filter(([name]) => !name.startsWith('onnx/') || onnx.has(name));
}

async function loadVariant() {
    const v = state.variant;
    const dtype = $('dtype').value;
    state.dtype = dtype;
    state.withAudio = v.audio && $('with-audio').checked;
    state.busy = true;
    window.matslice.loading = true;
    $('load').disabled = true;
    clearError();
    const started = performance.now();
    progress.total = filesToDownload(state.manifest, dtype, state.withAudio).reduce((s, [, r]) => s + r.bytes, 0);
    progress.loaded.clear();
    showProgress();
    const failed = loadFailureSignal();
    try {
        state.tf ??= await loadRuntime(showIsolation(), state.backend.device);
        await Promise.race([loadModel(v, dtype, state.backend.device), failed]);
    } catch (e) {
        if (state.backend.device === 'webgpu' && !state.loadFailures.length) {
            state.backend = { device: 'wasm', reason: `WebGPU failed while loading (${e.message}); fell back to WASM.` };
            showBackend(state.backend);
            try {
                await Promise.race([loadModel(v, dtype, 'wasm'), failed]);
            } catch (e2) {
                return loadFailed(e2);
            }
        } else {
            return loadFailed(e);
        }
    } finally {
        state.busy = false;
        state.rejectLoad = null;
        window.matslice.loading = false;
    }
    const ms = performance.now() - started;
    window.matslice.loadMs = ms;
    window.matslice.sessions = Object.fromEntries(Object.entries(state.model.sessions).map(([k, s]) => [k, { ...s.config }]));
    const gpuDevice = state.tf.env.backends.onnx.webgpu?.device; // set by onnxruntime-web once a WebGPU session exists
    window.matslice.runtime.webgpuDevice = gpuDevice ? {
        vendor: gpuDevice.adapterInfo?.vendor ?? null, architecture: gpuDevice.adapterInfo?.architecture ?? null,
        shaderF16: gpuDevice.features.has('shader-f16'),
    } : null;
    window.matslice.ready = true;
    $('progress').value = 1;
    $('progress-text').textContent = `Loaded ${v.label} (${dtype}, ${state.backend.device}) in ${(ms / 1000).toFixed(2)} s.`;
    $('prompt').disabled = false;
    $('prompt').placeholder = 'Say something to the model';
    // The default model's own prompts (models.json lists them for it): it was trained to answer these.
    const prompts = state.models.prompts ?? [];
    if (prompts.length && !$('prompt').value) {
        $('prompt').value = prompts[0];
        $('prompt').placeholder = `e.g. ${prompts.join(' / ')}`;
    }
    $('send').disabled = false;
    $('audio-input').hidden = !state.withAudio;
    $('prompt').focus();
}

async function loadModel(v, dtype, device) {
    const tf = state.tf;
    const id = v.path.replace(/\/$/, '');
    const options = { dtype, device };
    if (state.withAudio) {
        state.processor = await tf.AutoProcessor.from_pretrained(id);
        state.tokenizer = state.processor.tokenizer;
        state.model = await tf.Gemma3nForConditionalGeneration.from_pretrained(id, options);
    } else {
        state.tokenizer = await tf.AutoTokenizer.from_pretrained(id);
        state.model = await tf.Gemma3nForCausalLM.from_pretrained(id, options);
    }
    state.chatTemplate = await chatTemplate(v);
}

// A bare tokenizer only reads tokenizer_config.json's chat_template; Gemma 3n ships chat_template.jinja.
async function chatTemplate(v) {
    if (state.tokenizer.chat_template || !state.manifest.files['chat_template.jinja']) return undefined;
    const response = await checkedFetch(`${v.path}chat_template.jinja`);
    return response.text();
}

function loadFailed(error) {
    const named = state.loadFailures[0];
    const message = named ? named.message : describeLoadError(error);
    showError(message);
    $('progress-text').textContent = 'Loading failed.';
    $('load').disabled = false;
    state.loadFailures = [];
    console.error(error);
}

function describeLoadError(error) {
    // transformers.js does not say which session failed: the last model file read, else the variant's onnx/ folder
    const last = progress.current ?? '';
    const file = last.includes('/onnx/') ? last.replace(/\.onnx_data(_\d+)?$/, '.onnx') : `${state.variant.path}onnx/`;
    const text = String(error?.message ?? error);
    const op = text.match(/Could not find an implementation for (\w+)/);
    if (op) {
        return `onnxruntime-web's ${state.backend.device.toUpperCase()} backend has no ${op[1]} kernel, which this `
            + `${$('dtype').value} bundle (${state.variant.path}onnx/) uses: ${text}. Pick another dtype or variant, `
            + 'or use a browser with WebGPU.';
    }
    if (/protobuf|parse|Can't create a session|external data|failed to load model/i.test(text)) {
        return `Model file ${file} (or its .onnx_data) could not be read by onnxruntime: ${text}. ${REBUILD}`;
    }
    return `Loading ${state.variant.label} failed while reading ${file}: ${text}. ${REBUILD}`;
}

// ---------------------------------------------------------------- chat

function addMessage(role, text) {
    const div = document.createElement('div');
    div.className = `msg ${role}`;
    div.textContent = text;
    $('chat').append(div);
    $('chat').scrollTop = $('chat').scrollHeight;
    return div;
}

async function promptInputs(messages) {
    if (state.withAudio && state.audio) {
        const text = state.processor.apply_chat_template(messages, { add_generation_prompt: true, tokenize: false });
        return state.processor(text, null, state.audio);
    }
    if (!state.tokenizer.chat_template && !state.chatTemplate) {
        return state.tokenizer(messages.at(-1).content); // no template in the bundle: the raw prompt
    }
    return state.tokenizer.apply_chat_template(messages, {
        add_generation_prompt: true, return_dict: true, chat_template: state.chatTemplate,
    });
}

async function send(event) {
    event.preventDefault();
    const text = $('prompt').value.trim();
    if (!text || state.busy || !window.matslice.ready) return;
    state.busy = true;
    $('send').disabled = true;
    clearError();
    const content = state.audio ? [{ type: 'audio' }, { type: 'text', text }] : text;
    const messages = [...state.history, { role: 'user', content }];
    addMessage('user', state.audio ? `[audio] ${text}` : text);
    $('prompt').value = '';
    const out = addMessage('model', '');
    try {
        const run = await generate(messages, out);
        state.history = [...messages, { role: 'assistant', content: run.text }];
        state.audio = null;
        $('audio-status').textContent = 'No audio attached.';
    } catch (e) {
        showError(`Generation failed: ${e.message ?? e}`);
        console.error(e);
    } finally {
        state.busy = false;
        $('send').disabled = false;
    }
}

async function generate(messages, out) {
    const inputs = await promptInputs(messages);
    const maxNew = Math.max(1, Number($('max-tokens').value) || 64);
    const times = [];
    let text = '';
    const streamer = new state.tf.TextStreamer(state.tokenizer, {
        skip_prompt: true,
        skip_special_tokens: true,
        callback_function: (piece) => { text += piece; out.textContent = text; },
        token_callback_function: () => { times.push(performance.now()); showStats(started, times); },
    });
    const started = performance.now();
    const output = await state.model.generate({ ...inputs, max_new_tokens: maxNew, do_sample: false, streamer });
    const promptIds = Array.from(inputs.input_ids.data, Number);
    const newIds = Array.from(output.data, Number).slice(promptIds.length);
    const run = { text, promptIds, newIds, ...stats(started, times), backend: state.backend.device, dtype: state.dtype };
    window.matslice.runs.push(run);
    window.matslice.lastRun = run;
    showStats(started, times);
    return run;
}

function stats(started, times) {
    const firstTokenMs = times.length ? times[0] - started : null;
    const decode = times.length > 1 ? (times.length - 1) / ((times.at(-1) - times[0]) / 1000) : null;
    return { firstTokenMs, tokensPerSecond: decode, tokens: times.length };
}

function showStats(started, times) {
    const s = stats(started, times);
    const parts = [`backend ${state.backend.device === 'webgpu' ? 'WebGPU' : 'WASM'}`, `${s.tokens} tokens`];
    if (s.firstTokenMs !== null) parts.push(`first token ${s.firstTokenMs.toFixed(0)} ms`);
    if (s.tokensPerSecond !== null) parts.push(`${s.tokensPerSecond.toFixed(1)} tokens/s`);
    if (window.matslice.loadMs !== null) parts.push(`load ${(window.matslice.loadMs / 1000).toFixed(2)} s`);
    $('stats').textContent = parts.join(' · ');
}

// ---------------------------------------------------------------- audio

async function useAudioBlob(blob, label) {
    const url = URL.createObjectURL(blob);
    try {
        const rate = state.processor.feature_extractor.config.sampling_rate ?? 16000;
        state.audio = await state.tf.read_audio(url, rate);
        $('audio-status').textContent = `${label}: ${(state.audio.length / rate).toFixed(1)} s attached to the next message.`;
    } catch (e) {
        state.audio = null;
        showError(`The audio ${label} could not be decoded (${e.message ?? e}): try a WAV, MP3 or OGG file.`);
    } finally {
        URL.revokeObjectURL(url);
    }
}

let recorder = null;

async function toggleRecording() {
    if (recorder) {
        recorder.stop();
        return;
    }
    let stream;
    try {
        stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (e) {
        showError(`The microphone is not available (${e.message}): allow it for this site, or upload a file.`);
        return;
    }
    const chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (e) => chunks.push(e.data);
    recorder.onstop = async () => {
        stream.getTracks().forEach((t) => t.stop());
        recorder = null;
        $('record').textContent = 'Record from microphone';
        await useAudioBlob(new Blob(chunks, { type: chunks[0]?.type }), 'recording');
    };
    recorder.start();
    $('record').textContent = 'Stop recording';
    $('audio-status').textContent = 'Recording…';
}

// ---------------------------------------------------------------- start

async function start() {
    showIsolation();
    $('load').addEventListener('click', loadVariant);
    $('dtype').addEventListener('change', dtypeChanged);
    $('with-audio').addEventListener('change', () => !window.matslice.ready && !state.busy && settleBackend());
    $('prompt-form').addEventListener('submit', send);
    $('prompt').addEventListener('keydown', (e) => {
        if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); $('prompt-form').requestSubmit(); }
    });
    $('audio-file').addEventListener('change', (e) => e.target.files[0] && useAudioBlob(e.target.files[0], e.target.files[0].name));
    $('record').addEventListener('click', toggleRecording);
    try {
        state.models = await readModels();
    } catch (e) {
        $('variants').textContent = '';
        showError(e.message);
        return;
    }
    renderVariants();
    const wanted = params.get('variant') ?? state.models.default;
    if (wanted) await selectVariant(wanted);
    window.matslice.started = true;
}

start().catch((e) => showError(`The page failed to start: ${e.message ?? e}`));
