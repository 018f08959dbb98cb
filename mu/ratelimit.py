"""Sliding-window rate limits kept in memory, and the sweeper that bounds their memory."""

import collections
import threading
import time


class RateLimiter:
    """At most `limit` events per `window_seconds` for each key."""

    def __init__(self, limit: int, window_seconds: float, clock=time.monotonic):
        self.limit = limit
        self.window_seconds = window_seconds
        self.clock = clock
        self._events = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Record an event for `key` if it is within the limit; False (recording nothing) if not."""
        now = self.clock()
        with self._lock:
            events = self._events.get(key)
            if events is None:
                events = self._events[key] = collections.deque()
            while events and events[0] <= now - self.window_seconds:
                events.popleft()
            if len(events) >= self.limit:
                return False
            events.append(now)
            return True

    def sweep(self) -> int:
        """Drop keys whose events have all expired; return how many keys remain."""
        cutoff = self.clock() - self.window_seconds
        with self._lock:
            for key in [k for k, ev in self._events.items() if not ev or ev[-1] <= cutoff]:
                del self._events[key]
            return len(self._events)

    def __len__(self) -> int:
        return len(self._events)


class Sweeper(threading.Thread):
    """Background thread: every `interval_seconds`, sweep each limiter (and run extra chores)."""

    def __init__(self, limiters, interval_seconds: float = 60.0, chores=()):
        super().__init__(name="ratelimit-sweeper", daemon=True)
        self.limiters = limiters
        self.interval_seconds = interval_seconds
        self.chores = list(chores)
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval_seconds):
            for limiter in self.limiters:
                limiter.sweep()
            for chore in self.chores:
                try:
                    chore()
                except Exception as exc:  # a failed chore must not stop sweeping
                    from .log import log
                    log("mail", f"background task failed: {exc}")
