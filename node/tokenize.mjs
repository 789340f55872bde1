// Tokenize with transformers.js (the library a bundle runs in the browser) so Python can compare ids.
// Why: the child's tokenizer.json is written by Python; the browser runs transformers.js' own BPE,
// normalizer and added-token matcher, which must give the same ids as Python's `tokenizers` library.
//
// usage (from node/, see web_export/node.py): node tokenize.mjs request.json
// request.json: {"folder": "/abs/tokenizer/folder", "texts": ["..."], "chats": [[{"role", "content"}, ...]]}
// prints one JSON line: {"ids": [[...]], "with_specials": [[...]], "decoded": ["..."], "chat_ids": [[...]]}
// Texts are encoded without special tokens (with_specials: with them, i.e. <bos> from the post-processor)
// and decoded without clean-up; chats through the chat template with the generation prompt
// (chat_template.jinja in the folder is used when tokenizer_config.json has no chat_template).
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { AutoTokenizer, env } from '@huggingface/transformers';

const request = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const folder = path.resolve(request.folder);
env.allowLocalModels = true;
env.allowRemoteModels = false;
env.localModelPath = path.dirname(folder) + path.sep;
env.useFSCache = false;

const tokenizer = await AutoTokenizer.from_pretrained(path.basename(folder));
const ids = (request.texts ?? []).map((text) => tokenizer.encode(text, { add_special_tokens: false }));
const with_specials = (request.texts ?? []).map((text) => tokenizer.encode(text));
// clean_up_tokenization_spaces: transformers.js defaults it to true when tokenizer_config.json omits it (Python
// defaults to false), which deletes the space in "self != 1"; Gemma's own config sets it false.
// decode([]) throws in transformers.js ("token_ids must be a non-empty array"); the empty text decodes to ''.
const decoded = ids.map((row) =>
    row.length ? tokenizer.decode(row, { skip_special_tokens: false, clean_up_tokenization_spaces: false }) : '',
);
const templateFile = path.join(folder, 'chat_template.jinja');
const chat_template = tokenizer.chat_template ?? (existsSync(templateFile) ? readFileSync(templateFile, 'utf8') : null);
const chat_ids = (request.chats ?? []).map((messages) =>
    Array.from(
        tokenizer.apply_chat_template(messages, {
            chat_template,
            add_generation_prompt: true,
            tokenize: true,
            return_tensor: false,
            return_dict: false,
        }),
        Number,
    ),
);
process.stdout.write(JSON.stringify({ ids, with_specials, decoded, chat_ids }) + '\n');
