// A streamed bundle's embeddings as site/matslice.js computes them, in Node: the loader's own RowStore (fetch by HTTP
// Range from a served bundle, block checks, decoding), without a browser. tests/web_export/test_rows.py compares its
// rows with the bundled embed_tokens session's outputs in onnxruntime.
//
// usage: node rows.mjs <variant folder URL> <dtype> <id,id,...>
// prints one JSON line: {inputs_embeds, per_layer_inputs} (little-endian float32, base64), {dims}, and the store's stats
import { RowStore, readManifest } from '../site/matslice.js';

const [url, dtype, list] = process.argv.slice(2);
const manifest = await readManifest(url);
const record = manifest.sessions.embed_tokens[dtype].rows;
if (!record) throw new Error(`${url} has no ${dtype} row file: export it with --embeddings streamed`);
const store = await RowStore.open(manifest, record);
const ids = list.split(',').map(Number);
await store.ensure(ids);
const { embeds, layers } = store.embed(ids);
const base64 = (array) => Buffer.from(array.buffer, array.byteOffset, array.byteLength).toString('base64');
console.log(JSON.stringify({
    inputs_embeds: base64(embeds), per_layer_inputs: base64(layers), stats: store.stats,
    dims: { ids: ids.length, hidden: store.header.hidden_size, layers: store.header.layers, per_layer: store.header.per_layer_size },
}));
