"""The built-in evaluation text and speech clips, made offline.

The text is a short original passage of plain English (written for MatSlice, Apache-2.0 like the
code). The speech clips are that passage's sentences spoken by espeak-ng (Debian's `espeak-ng`
package), synthesised on first use and cached: real speech, no download.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np

from gemma3n.cache import folder
from gemma3n.errors import UserError

TEXT = (
    "The river ran slowly past the old mill, and the children sat on the stone wall to watch the water. "
    "Their grandmother had told them that the mill once ground the wheat for every house in the valley. "
    "Now the wheel was still, and green moss covered the wooden paddles. In the spring the water rose high "
    "and loud, but in the late summer it was quiet enough to hear the birds in the trees on the far bank. "
    "The youngest child asked why nobody used the mill any more. Her brother said that a bigger mill had been "
    "built in the town, with machines that never grew tired. She thought about that for a long time, and then "
    "she said that she liked the old mill better, because it had a face, and the new one only had a door. "
    "When the sun went down they walked home along the path by the fields, counting the first stars as they "
    "appeared, and arguing about which one was the brightest."
)

SAMPLE_RATE = 16_000


def sentences(text: str = TEXT) -> list[str]:
    return [s.strip() + "." for s in text.split(".") if s.strip()]


def read_wav(path: Path, sampling_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A PCM WAV file (8/16/32-bit, any rate, any channels) as mono float32 at `sampling_rate`."""
    try:
        with wave.open(str(path), "rb") as f:
            rate, width, channels = f.getframerate(), f.getsampwidth(), f.getnchannels()
            frames = f.readframes(f.getnframes())
    except (wave.Error, EOFError, OSError) as exc:
        raise UserError(f"{Path(path).name} is not a readable PCM WAV file ({exc}): convert it "
                         f"(sox in.mp3 out.wav)") from None
    if width not in (1, 2, 4) or not frames:
        raise UserError(f"{Path(path).name} is empty or not 8/16/32-bit PCM: convert it to 16-bit PCM WAV")
    kind = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
    samples = np.frombuffer(frames, dtype=kind).astype(np.float32)
    samples = (samples - 128) / 128 if width == 1 else samples / float(2 ** (8 * width - 1))  # as browsers decode
    samples = samples.reshape(-1, channels).mean(axis=1)
    if rate != sampling_rate:
        grid = np.arange(0, len(samples), rate / sampling_rate)
        samples = np.interp(grid, np.arange(len(samples)), samples)
    return samples.astype(np.float32)


def speech_clips(cache: Path | None = None, count: int = 3) -> list[np.ndarray]:
    """The first `count` sentences of TEXT spoken by espeak-ng, cached as WAV files (eval-speech/ in the user
    cache unless `cache` is given)."""
    espeak = shutil.which("espeak-ng")
    cache = cache or folder("eval-speech")
    clips = []
    for i, sentence in enumerate(sentences()[:count]):
        path = cache / f"sentence-{i}.wav"
        if not path.exists():
            if espeak is None:
                raise UserError("no audio clips given and espeak-ng is missing: apt-get install espeak-ng, "
                                 "or pass --audio DIR")
            cache.mkdir(parents=True, exist_ok=True)
            subprocess.run([espeak, "-w", str(path), "-s", "160", sentence], check=True, capture_output=True)
        clips.append(read_wav(path))
    return clips


def load_clips(folder: Path) -> list[np.ndarray]:
    files = sorted(folder.glob("*.wav"))
    if not files:
        raise UserError(f"{folder} has no .wav files: pass a folder of 16-bit PCM WAV clips")
    return [read_wav(path) for path in files]
