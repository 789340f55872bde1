// MatSlice browser page: pick a sliced Gemma 3n variant, see the backend its manifest allows, load it and chat with
// streamed output. Everything model-related (backend choice, dtype fallback, checked downloads, streamed embedding
// rows, generation) is matslice.js, the loader any page can import; this file is its UI.
//
// Text chat loads Gemma3nForCausalLM (embed_tokens + decoder only); audio needs Gemma3nForConditionalGeneration,
// which also loads the vision encoder, so it is opt-in and its cost shown.
// window.matslice exposes state and the last run's token ids for tests/website/test_browser.py.
import {
    checkRange, chooseBackend, generate as generateWith, loadVariant as load, megabytes as mb, readManifest, timing,
    webgpuAdapter,
} from './matslice.js';

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);

const state = {
    models: null, variant: null, manifest: null, backend: null, loaded: null, withAudio: false, audio: null,
    history: [], busy: false,
};
window.matslice = {
    ready: false, loading: false, error: null, backend: null, backendReason: null, adapter: null, runtime: null,
    sessions: null, loadMs: null, runs: [], lastRun: null,
};

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
        state.manifest = await readManifest(v.path);
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

// ---------------------------------------------------------------- backend

// The backend for the chosen variant, dtype and sessions (matslice.js chooseBackend): a dtype the user picked stays
// and the backend moves; the default dtype moves instead when another one suits the backend better.
async function decideBackend() {
    const backend = await chooseBackend(state.manifest, {
        dtype: state.dtypePicked ? $('dtype').value : null,
        device: params.get('backend') === 'wasm' ? 'wasm' : null,
        withAudio: state.variant.audio && $('with-audio').checked,
    });
    if (params.get('backend') === 'wasm') backend.reason = backend.reason.replace('chosen by the caller', 'chosen by ?backend=wasm');
    const adapter = await webgpuAdapter();
    window.matslice.adapter = adapter.missing ? null : adapter;
    $('dtype').value = backend.dtype;
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

function showProgress({ loaded, total, file }) {
    $('progress').value = loaded / Math.max(total, 1);
    $('progress-text').textContent = `${mb(loaded)} of ${mb(Math.max(total, loaded))}: ${file}`;
}

// For tests: bytes [start, end] of a bundle file fetched through the checked fetch, as their SHA-256, or the error.
window.matslice.checkRange = (file, span) => checkRange(state.manifest, file.slice(state.variant.path.length), span);

// ---------------------------------------------------------------- loading

async function loadVariant() {
    const v = state.variant;
    state.withAudio = v.audio && $('with-audio').checked;
    state.busy = true;
    window.matslice.loading = true;
    $('load').disabled = true;
    clearError();
    showProgress({ loaded: 0, total: 1, file: '' });
    try {
        state.loaded = await load(v.path, {
            manifest: state.manifest, backend: state.backend, withAudio: state.withAudio, onProgress: showProgress,
            threads: showIsolation(), proxy: params.get('proxy') === '1',
            wholeRowsLimit: params.has('whole-rows-limit') ? Number(params.get('whole-rows-limit')) : undefined,
        });
    } catch (e) {
        showError(e.message ?? String(e));
        $('progress-text').textContent = 'Loading failed.';
        $('load').disabled = false;
        console.error(e);
        return;
    } finally {
        state.busy = false;
        window.matslice.loading = false;
    }
    const loaded = state.loaded;
    if (loaded.device !== state.backend.device) {
        state.backend = { device: loaded.device, reason: loaded.reason };
        showBackend(state.backend);
    }
    const { tf, build, threads, proxy } = loaded.runtime;
    window.matslice.loadMs = loaded.loadMs;
    window.matslice.sessions = Object.fromEntries(Object.entries(loaded.model.sessions).map(([k, s]) => [k, { ...s.config }]));
    const gpuDevice = tf.env.backends.onnx.webgpu?.device; // set by onnxruntime-web once a WebGPU session exists
    window.matslice.runtime = {
        build, threads, proxy,
        webgpuDevice: gpuDevice ? {
            vendor: gpuDevice.adapterInfo?.vendor ?? null, architecture: gpuDevice.adapterInfo?.architecture ?? null,
            shaderF16: gpuDevice.features.has('shader-f16'),
        } : null,
    };
    window.matslice.rows = loaded.rows ? { note: loaded.rows.note, stats: loaded.rows.stats, header: loaded.rows.header } : null;
    window.matslice.ready = true;
    $('progress').value = 1;
    const streamed = loaded.rows ? `; embedding rows streamed from ${loaded.rows.record.file}${loaded.rows.note ? ` (${loaded.rows.note})` : ''}` : '';
    $('progress-text').textContent = `Loaded ${v.label} (${loaded.dtype}, ${loaded.device}) in ${(loaded.loadMs / 1000).toFixed(2)} s${streamed}.`;
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

// ---------------------------------------------------------------- chat

function addMessage(role, text) {
    const div = document.createElement('div');
    div.className = `msg ${role}`;
    div.textContent = text;
    $('chat').append(div);
    $('chat').scrollTop = $('chat').scrollHeight;
    return div;
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
    const started = performance.now();
    const times = [];
    const run = await generateWith(state.loaded, messages, {
        maxNewTokens: Math.max(1, Number($('max-tokens').value) || 64), audio: state.audio,
        onText: (piece, text) => { out.textContent = text; },
        onToken: () => { times.push(performance.now()); showStats(timing(started, times)); },
    });
    window.matslice.runs.push(run);
    window.matslice.lastRun = run;
    showStats(run);
    return run;
}

function showStats(s) {
    const parts = [`backend ${state.loaded.device === 'webgpu' ? 'WebGPU' : 'WASM'}`, `${s.tokens} tokens`];
    if (s.firstTokenMs !== null) parts.push(`first token ${s.firstTokenMs.toFixed(0)} ms`);
    if (s.tokensPerSecond !== null) parts.push(`${s.tokensPerSecond.toFixed(1)} tokens/s`);
    if (window.matslice.loadMs !== null) parts.push(`load ${(window.matslice.loadMs / 1000).toFixed(2)} s`);
    if (s.rows) parts.push(`rows ${mb(s.rows.fetchedBytes)} fetched, ${s.rows.cachedBlocks} blocks from cache`);
    $('stats').textContent = parts.join(' · ');
}

// ---------------------------------------------------------------- audio

async function useAudioBlob(blob, label) {
    const url = URL.createObjectURL(blob);
    try {
        const rate = state.loaded.processor.feature_extractor.config.sampling_rate ?? 16000;
        state.audio = await state.loaded.runtime.tf.read_audio(url, rate);
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
