"""Sliding-window rate limits kept in memory, the sweeper that bounds their memory, and
the failure throttles of logins (web, IMAP, submission)."""

import collections
import ipaddress
import threading
import time

# Every throttle forgets its least recently touched key past this many, so a flood of
# names or addresses costs bounded memory (and never wipes the table at once).
THROTTLE_MAX_KEYS = 50_000


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


class Throttle:
    """At most `limit` events per key in `window_seconds`; at the limit the key is refused
    for a whole window from the event that reached it. Bounded to `max_keys` keys."""

    def __init__(self, limit: int, window_seconds: float, max_keys: int = THROTTLE_MAX_KEYS, clock=time.monotonic):
        self.limit, self.window_seconds, self.max_keys, self.clock = limit, window_seconds, max_keys, clock
        self._entries = collections.OrderedDict()   # key -> [count, window start]
        self._lock = threading.Lock()

    def refused(self, key: str) -> bool:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return False
            if self.clock() - entry[1] >= self.window_seconds:
                del self._entries[key]
                return False
            return entry[0] >= self.limit

    def count(self, key: str) -> None:
        now = self.clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or now - entry[1] >= self.window_seconds:
                entry = self._entries[key] = [0, now]
            entry[0] += 1
            if entry[0] == self.limit:
                entry[1] = now   # locked for a whole window from here
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_keys:
                self._entries.popitem(last=False)

    def forget(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


def address_key(address: str) -> str:
    """The throttles' key for a client: its IPv4 address, or its IPv6 /64 (one customer's
    network hands out any address inside it)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if ip.version == 6:
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


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
