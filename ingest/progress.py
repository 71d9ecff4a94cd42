"""Progress of a running build, with an estimate of the time left, for status lines and chat notes.

`reingest(progress=...)` reports (done, total, stage); a `BuildProgress` is such a callback that also
remembers where the build is, so that another thread (a chat's /status, an answer given while the index
is still being built) can say "embedding passages 1,200 of 2,834 (42 %), about 1 min left". The console
draws the same numbers as a tqdm bar.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# What each stage is called in a sentence.
STAGE_WORDS = {"load": "reading the guides", "chunk": "cutting them into passages",
               "model": "preparing the embedding model", "embed": "embedding passages",
               "check": "checking the new index", "switch": "switching to it"}


def about(seconds: float) -> str:
    """A rounded, human duration: 'a few seconds', 'about 40 s', 'about 3 min'."""
    if seconds < 10:
        return "a few seconds"
    if seconds < 90:
        return f"about {int(round(seconds, -1))} s"
    return f"about {round(seconds / 60)} min"


class BuildProgress:
    """A thread-safe progress callback that can describe itself. `listeners` get every report too."""

    def __init__(self, *listeners: Callable[[int, int, str], None], clock: Callable[[], float] = time.monotonic):
        self._listeners = [f for f in listeners if f is not None]
        self._clock = clock
        self._lock = threading.Lock()
        self.stage = "starting"
        self.done = 0
        self.total = 0
        self.stage_started = clock()
        self.finished = False

    def __call__(self, done: int, total: int, stage: str) -> None:
        with self._lock:
            if stage != self.stage:
                self.stage, self.stage_started = stage, self._clock()
            self.done, self.total = done, total
        for listener in self._listeners:
            listener(done, total, stage)

    def finish(self) -> None:
        with self._lock:
            self.finished = True

    def seconds_left(self) -> float | None:
        """Time left in the embedding stage (the long one) from its rate so far; None before a rate is known."""
        with self._lock:
            if self.finished or self.stage != "embed" or self.done <= 0 or self.total <= self.done:
                return None
            elapsed = self._clock() - self.stage_started
            return elapsed / self.done * (self.total - self.done)

    def describe(self) -> str:
        """'embedding passages 1,200 of 2,834 (42 %), about 1 min left' (or the stage alone)."""
        with self._lock:
            stage, done, total = self.stage, self.done, self.total
        if self.finished:
            return "finished"
        words = STAGE_WORDS.get(stage, stage)
        if stage == "embed" and total:
            text = f"{words} {done:,} of {total:,} ({100 * done // total} %)"
            left = self.seconds_left()
            return f"{text}, {about(left)} left" if left is not None else text
        return words
