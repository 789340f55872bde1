"""Progress of the long stages (slicing, tracing, writing), for a terminal and for an app at once.

Why both: a user at a terminal reads tqdm bars; an app (the demo's Design tab) needs numbers, not text to
parse. A stage loops over its steps through `steps`, which draws the bar and also tells an optional
`Progress` callback the fraction done and what is running. A caller that runs several stages gives each its
share of the whole with `within`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from tqdm import tqdm

Progress = Callable[[float, str], None]  # (fraction of the whole job done, 0-1; what is running now)
T = TypeVar("T")


def within(progress: Progress | None, start: float, end: float) -> Progress | None:
    """A callback for one stage that reports its own 0-1 as `start`-`end` of the whole to `progress`."""
    if progress is None:
        return None
    return lambda fraction, what: progress(start + (end - start) * fraction, what)


def steps(items: Sequence[T], desc: str, unit: str, progress: Progress | None = None,
          name: Callable[[T], str] = str) -> Iterator[T]:
    """`items` one by one under a tqdm bar; before each, `progress` hears the fraction done and `desc: name(item)`;
    after the last, 1.0."""
    count = max(len(items), 1)
    for done, item in enumerate(tqdm(items, desc=desc, unit=unit)):
        if progress is not None:
            progress(done / count, f"{desc}: {name(item)}")
        yield item
    if progress is not None:
        progress(1.0, desc)


def report(progress: Progress | None, fraction: float, what: str) -> None:
    if progress is not None:
        progress(fraction, what)
