"""Stand-in Gemma 3n models, made offline, for tests, demos and the default site.

Public API:
- `standins.tiny.write_tiny(out, text_only=False, seed=0)`: a tiny random multimodal (or text-only) Gemma 3n
  folder that exercises every structure a slice touches;
- `standins.nano.write_nano(out, seed=0, matformer=True)`: a nano Gemma 3n whose decoder is trained
  MatFormer-style on CPU, and `standins.nano.NAMED` / `E2B_LIKE` / `HARSH`, the nested slices it was trained for;
- `standins.default.default_checkpoint(kind="nano")`: either one, built once and cached under .cache/models.
Everything here imports torch; the slicing and planning stages below never import this package.
"""
