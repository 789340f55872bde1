// MatSlice browser page: pick a sliced Gemma 3n variant, check the backend against its manifest, load it with
// transformers.js from this origin only, and chat with streamed output.
//
// Why it is shaped like this:
// * every byte comes from this origin: transformers.js and the onnxruntime-web WASM files live in vendor/,
//   models in models/ (env.allowRemoteModels = false, wasmPaths pointed at vendor/);
// * the backend is decided before any download: WebGPU only when an adapter exists and its buffer limits
//   hold the bundle's largest tensor (manifest.json), else WASM, with the reason on the page;
// * every model file is fetched through env.fetch, which checks it against manifest.json (HTTP status, size,
//   SHA-256 up to HASH_LIMIT bytes), so a missing or corrupt file is named in the page with what to do;
// * text chat loads Gemma3nForCausalLM (embed_tokens + decoder only); audio needs
//   Gemma3nForConditionalGeneration, which also loads the vision encoder, so it is opt-in and its cost shown.
// window.matslice exposes state and the last run's token ids for tests/site/test_browser.py.

const HASH_LIMIT = 256 * 1024 * 1024;
const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);

const state = {
    models: null, variant: null, manifest: null, backend: null, tf: null,
    model: null, tokenizer: null, processor: null, withAudio: false, audio: null,
    history: [], busy: false, loadFailures: [],
};
window.matslice = { ready: false, loading: false, error: null, backend: null, loadMs: null, runs: [], lastRun: null };

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
    updateAudioCost();
    $('load').disabled = true;
    try {
        state.manifest = await fetchJSON(`${v.path}manifest.json`);
        state.backend = await chooseBackend(state.manifest);
        pickDtype(v, state.backend);
        showBackend(state.backend);
        $('load').disabled = false;
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

async function chooseBackend(manifest) {
    const largest = manifest.largest_tensor;
    const need = `its largest tensor, ${largest.name} in ${largest.session}, is ${mb(largest.bytes)}`;
    if (params.get('backend') === 'wasm') return { device: 'wasm', reason: 'WASM chosen by ?backend=wasm.' };
    if (!('gpu' in navigator)) {
        return { device: 'wasm', reason: 'This browser has no WebGPU (navigator.gpu is missing); running on the CPU with WASM.' };
    }
    let adapter = null;
    try {
        adapter = await navigator.gpu.requestAdapter();
    } catch { /* treated as no adapter */ }
    if (!adapter) {
        return { device: 'wasm', reason: 'WebGPU found no usable GPU adapter (disabled or blocklisted); running on the CPU with WASM.' };
    }
    const limit = Math.min(adapter.limits.maxBufferSize, adapter.limits.maxStorageBufferBindingSize);
    if (largest.bytes > limit) {
        return {
            device: 'wasm',
            reason: `WebGPU's limit here is ${mb(limit)} per buffer but ${need}; running on the CPU with WASM instead.`,
        };
    }
    return { device: 'webgpu', reason: `WebGPU: the adapter allows ${mb(limit)} per buffer and ${need}.` };
}

// MatSlice's own bundles run on WASM in every dtype (their quantized lookups use standard ops). A bundle made
// elsewhere may use an op onnxruntime-web's WASM build lacks (models.json not_on_wasm, e.g.
// GatherBlockQuantized): on WASM pick a dtype whose graphs it can run, and say so.
function pickDtype(v, backend) {
    if (backend.device !== 'wasm') return;
    const blocked = v.not_on_wasm ?? {};
    const usable = v.dtypes.filter((d) => !(blocked[d] ?? []).length);
    const chosen = $('dtype').value;
    if ((blocked[chosen] ?? []).length && usable.length) {
        $('dtype').value = usable[0];
        backend.reason += ` ${chosen} needs WebGPU (${blocked[chosen].join(', ')} has no WASM kernel), so ${usable[0]} is used.`;
    } else if (!usable.length) {
        backend.reason += ` No dtype of this variant runs on WASM (${Object.values(blocked).flat().join(', ')}): rebuild it with --dtype q8.`;
    }
}

function showBackend(backend) {
    const line = $('backend');
    line.textContent = `Backend: ${backend.device === 'webgpu' ? 'WebGPU' : 'WASM'}. ${backend.reason}`;
    line.className = `backend ${backend.device === 'webgpu' ? 'ok' : 'warn'}`;
    window.matslice.backend = backend.device;
}

function showIsolation() {
    const threads = crossOriginIsolated ? Math.min(navigator.hardwareConcurrency || 1, 8) : 1;
    $('isolation').textContent = crossOriginIsolated
        ? `Cross-origin isolated: WASM runs with ${threads} threads.`
        : 'Not cross-origin isolated: WASM runs single-threaded. Serve with COOP/COEP headers (nox -s serve, or the shipped _headers file).';
    return threads;
}

// ---------------------------------------------------------------- runtime and checked fetch

async function loadRuntime(threads) {
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
    tf.env.backends.onnx.wasm.wasmPaths = {
        mjs: `${vendor}ort-wasm-simd-threaded.asyncify.mjs`,
        wasm: `${vendor}ort-wasm-simd-threaded.asyncify.wasm`,
    };
    tf.env.backends.onnx.wasm.numThreads = threads;
    tf.env.fetch = checkedFetch;
    return tf;
}

const progress = { total: 0, loaded: new Map(), current: '' };

function bundleFile(url) {
    const path = new URL(url, location.href).pathname;
    const base = new URL(state.variant.path, location.href).pathname;
    return path.startsWith(base) ? decodeURIComponent(path.slice(base.length)) : null;
}

// The fetch transformers.js uses: bundle files are checked against manifest.json while they stream in.
async function checkedFetch(url, init) {
    const file = bundleFile(String(url));
    const record = file && state.manifest.files[file];
    let response;
    try {
        response = await fetch(url, init);
    } catch (e) {
        throw remember(new BundleFileError(`${state.variant.path}${file ?? url}`, `could not be fetched (${e.message})`, 'Check that the server is running.'));
    }
    if (!record) return response; // optional files transformers.js probes for; a 404 there is expected
    const where = `${state.variant.path}${file}`;
    if (!response.ok) {
        throw remember(new BundleFileError(where, `is missing on the server (HTTP ${response.status})`, REBUILD));
    }
    if (init?.headers && new Headers(init.headers).has('Range')) return response;
    return new Response(response.body.pipeThrough(verifier(where, record)), {
        status: response.status, statusText: response.statusText, headers: response.headers,
    });
}

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

function verifier(where, record) {
    let size = 0;
    const chunks = record.bytes <= HASH_LIMIT ? [] : null;
    return new TransformStream({
        transform(chunk, controller) {
            size += chunk.byteLength;
            if (chunks) chunks.push(chunk);
            progress.loaded.set(where, size);
            progress.current = where;
            showProgress();
            controller.enqueue(chunk);
        },
        async flush(controller) {
            if (size !== record.bytes) {
                controller.error(remember(new BundleFileError(where, `is ${size} bytes but manifest.json says ${record.bytes} (truncated or replaced)`, REBUILD)));
                return;
            }
            if (chunks && (await sha256(chunks, size)) !== record.sha256) {
                controller.error(remember(new BundleFileError(where, 'is corrupt: its SHA-256 differs from manifest.json', REBUILD)));
            }
        },
    });
}

async function sha256(chunks, size) {
    const all = new Uint8Array(size);
    let offset = 0;
    for (const c of chunks) { all.set(c, offset); offset += c.byteLength; }
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', all));
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
    const sessions = withAudio ? Object.keys(manifest.sessions) : ['embed_tokens', 'decoder_model_merged'];
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
        state.tf ??= await loadRuntime(showIsolation());
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
    window.matslice.ready = true;
    $('progress').value = 1;
    $('progress-text').textContent = `Loaded ${v.label} (${dtype}, ${state.backend.device}) in ${(ms / 1000).toFixed(2)} s.`;
    $('prompt').disabled = false;
    $('prompt').placeholder = 'Say something to the model';
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
    const file = progress.current || `${state.variant.path}onnx/`;
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
    $('dtype').addEventListener('change', updateAudioCost);
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
