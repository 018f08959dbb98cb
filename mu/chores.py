"""The store's background chores on a thread of their own: journal compaction, reclaiming
deleted messages' space, and folding finished deliveries' status into their records.

They used to ride on the rate-limit sweeper; a long reclamation pass (it copies live blobs,
up to half a pack) then held up the sweeping, and a failing chore shared its error path.
Each chore decides for itself whether there is work (`Store.maybe_compact`: the journal
outgrew the snapshot; `Store.maybe_reclaim`: an hourly look at the packs).
"""

import threading

from .log import log

CHORE_INTERVAL_SECONDS = 60.0


def delivery_finished(fields: dict) -> bool:
    """Whether an outbound message's status is final (nothing left to retry)."""
    return fields.get("status") in ("sent", "failed") and not fields.get("next_try")


class StoreChores(threading.Thread):
    """Every `interval_seconds`, run each chore; one that fails is logged and tried next time."""

    def __init__(self, store, interval_seconds: float = CHORE_INTERVAL_SECONDS):
        super().__init__(name="store-chores", daemon=True)
        self.chores = [("compaction", store.maybe_compact), ("reclamation", store.maybe_reclaim),
                       ("folding delivery status", lambda: store.fold_overlays(delivery_finished))]
        self.interval_seconds = interval_seconds
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval_seconds):
            for name, chore in self.chores:
                if self.stopping.is_set():
                    return
                try:
                    chore()
                except Exception as exc:
                    log("store", f"{name} failed, trying again in {self.interval_seconds:g} s: {exc}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the chore under way (a compaction is never cut short by shutdown)."""
        self.stopping.set()
        if self.is_alive():
            self.join(timeout)
