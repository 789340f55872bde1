// Load a MatSlice bundle folder with transformers.js in Node (onnxruntime-node, CPU) and greedy-generate.
// Why: the Python tests compare these ids with PyTorch's, which proves the bundle loads and runs the way the
// browser build of the same library loads it (same file resolution, config keys, session wiring).
//
// usage: node generate.mjs <bundle_dir> [--dtype fp32] [--max-new-tokens 12] [--min-new-tokens 0] [--ids 2,5,...] [--prompt text]
//                                        [--class causal|conditional] [--inputs inputs.json]
// inputs.json (optional) holds extra model inputs as {name: {"type", "dims", "data"}}, e.g. the audio
// processor's input_features / input_features_mask, so Python and Node run on identical features.
// prints one JSON line: {"prompt_ids": [...], "tokenizer_ids": [...], "new_ids": [...]}
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma3nForConditionalGeneration,
    Tensor,
    env,
} from '@huggingface/transformers';

const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
        dtype: { type: 'string', default: 'fp32' },
        'max-new-tokens': { type: 'string', default: '12' },
        'min-new-tokens': { type: 'string', default: '0' },
        ids: { type: 'string' },
        prompt: { type: 'string', default: 'Hello world' },
        class: { type: 'string', default: 'causal' },
        inputs: { type: 'string' },
    },
});
if (positionals.length !== 1) throw new Error('expected exactly one bundle folder');

const bundle = path.resolve(positionals[0]);
env.allowLocalModels = true;
env.allowRemoteModels = false;
env.localModelPath = path.dirname(bundle) + path.sep;
env.useFSCache = false;
const modelId = path.basename(bundle);

const tokenizer = await AutoTokenizer.from_pretrained(modelId);
const tokenizerIds = Array.from(tokenizer(values.prompt).input_ids.data, Number);
const promptIds = values.ids ? values.ids.split(',').map(Number) : tokenizerIds;

const Cls = values.class === 'conditional' ? Gemma3nForConditionalGeneration : AutoModelForCausalLM;
const model = await Cls.from_pretrained(modelId, { dtype: values.dtype, device: 'cpu' });

const n = promptIds.length;
const input_ids = new Tensor('int64', BigInt64Array.from(promptIds, BigInt), [1, n]);
const attention_mask = new Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]);
const extra = values.inputs ? readInputs(values.inputs) : {};
const maxNew = Number(values['max-new-tokens']);
const output = await model.generate({
    ...extra,
    input_ids,
    attention_mask,
    do_sample: false,
    max_new_tokens: maxNew,
    min_new_tokens: Number(values['min-new-tokens']),
});
const all = Array.from(output.data, Number);
console.log(JSON.stringify({ prompt_ids: promptIds, tokenizer_ids: tokenizerIds, new_ids: all.slice(n) }));
await model.dispose();

function readInputs(file) {
    const arrays = { float32: Float32Array, bool: Uint8Array, int64: BigInt64Array };
    const spec = JSON.parse(readFileSync(file, 'utf8'));
    return Object.fromEntries(
        Object.entries(spec).map(([name, { type, dims, data }]) => {
            const values = type === 'int64' ? data.map(BigInt) : type === 'bool' ? data.map(Number) : data;
            return [name, new Tensor(type, arrays[type].from(values), dims)];
        }),
    );
}
