"""The text a search measures candidates on: a built-in English passage, or the user's file.

Why a passage of its own: `matslice eval` scores on evaluation.data.TEXT, so a search calibrated on that same
text would choose slices for the very passage they are later judged on. This one (written for MatSlice,
Apache-2.0 like the code) is plain, varied English prose: narration, dialogue, numbers and instructions, a few
hundred words, enough windows for a stable mean KL while a trial stays a few forward passes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gemma3n.errors import UserError

MIN_TOKENS = 64  # fewer positions than this make one token's KL swing a candidate's rank

PASSAGE = (
    "On the first cold morning of the autumn, the baker opened her shop an hour earlier than usual. She had "
    "noticed that people walked faster when the air turned sharp, and that they wanted something warm to hold "
    "on the way to the station. So she lit the ovens at four, set out the trays of rolls, and wrote a new sign "
    "by hand: hot bread from half past five. By six o'clock there was a line at the door.\n\n"
    "Her neighbour, who repaired bicycles, came in with grease on his fingers and asked how she had known. "
    "She laughed and said that she had not known anything. She had only watched the street for twenty years. "
    "The first customers of the day were always the same: a nurse going home after the night shift, two "
    "students who never seemed to sleep, and an old man who bought one roll, ate half of it at the counter, "
    "and carried the other half home for his dog.\n\n"
    "In the afternoon the shop was quiet. She used the time to plan the week. On Monday she would order flour "
    "and salt; on Wednesday the butter would arrive; on Friday she baked the large loaves that families bought "
    "for the weekend. She kept the numbers in a small notebook: forty loaves in a normal week, sixty before a "
    "holiday, and never more than eighty, because the ovens could not hold more. When a recipe failed, she "
    "wrote down what she had changed, so that she would not make the same mistake twice.\n\n"
    "To make the simple white loaf, she mixed five hundred grams of flour with ten grams of salt, seven grams "
    "of yeast and about three hundred and fifty millilitres of warm water. She kneaded the dough for ten "
    "minutes, until it was smooth and stretched without tearing, then left it covered in a bowl for an hour. "
    "After shaping it she let it rise again, cut a line across the top with a sharp knife, and baked it until "
    "the crust was brown and the bottom sounded hollow when she knocked on it.\n\n"
    "Late in the evening, after the floor was swept and the trays were washed, she sat by the window with a "
    "cup of tea. The street lamps came on one by one. A few people still passed, talking quietly, and a cat "
    "crossed the road without looking either way. She thought about the morning again, and about how small "
    "changes, made at the right moment, could turn an ordinary day into a good one. Then she turned off the "
    "lights, locked the door, and walked home under a clear sky full of stars."
)


def read_calibration(path: str | None) -> str:
    """The user's UTF-8 calibration file, or the built-in passage when none is given."""
    if path is None:
        return PASSAGE
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read --calibration {path} ({error}): pass a UTF-8 text file") from None


def calibration_windows(tokenizer: Any, text: str, window: int, source: str) -> list[list[int]]:
    """The text's token ids in windows of at most `window` tokens, each opened by BOS (as `matslice eval`)."""
    from evaluation.compare import windows

    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < MIN_TOKENS:
        raise UserError(f"{source} is {len(ids)} tokens long in this model's tokenizer: give a text of at least "
                        f"{MIN_TOKENS} tokens (a few paragraphs), so the mean KL is not one token's")
    return [chunk.tolist() for chunk in windows(ids, tokenizer.bos_token_id, window)]
