"""Per-user photo rate limit (sliding window), kept in memory.

It protects the shared model from one user flooding it; a restart forgets the counts,
which is acceptable for a courtesy limit.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable


class PhotoRateLimiter:
    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._stamps: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def check(self, user_key: str, photos: int = 1) -> int:
        """Record `photos` for the user and return 0, or return the seconds to wait (nothing recorded).

        An album counts as its number of photos; a single album larger than the limit is
        still allowed when the user's window is empty (the per-observation cap limits it).
        """
        if self.limit <= 0:
            return 0
        now = self._clock()
        with self._lock:
            stamps = self._stamps[user_key]
            while stamps and now - stamps[0] >= self.window_s:
                stamps.popleft()
            if stamps and len(stamps) + photos > self.limit:
                # Wait until enough old photos leave the window.
                index = min(len(stamps) - 1, len(stamps) + photos - self.limit - 1)
                return max(1, math.ceil(stamps[index] + self.window_s - now))
            stamps.extend([now] * photos)
            return 0
