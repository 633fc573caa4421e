"""Rate limits on sign-in: per username and per client address, so neither guessing one user's
password from many places nor many users' passwords from one place gets far.

After ``limit`` failures within ``window`` seconds, that user (or that address) may not try again
until the oldest failure leaves the window; a success clears the user's count. The counts live in
the process (each server process limits on its own), bounded in size.
"""

from __future__ import annotations

import time
from collections import deque

MAX_TRACKED = 10_000


class LoginThrottle:
    def __init__(self, limit: int = 5, window: float = 300) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.get(key)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return failures

    def allowed(self, username: str, address: str) -> bool:
        now = time.monotonic()
        return all(len(self._recent(key, now)) < self.limit for key in (f"user:{username}", f"addr:{address}"))

    def failed(self, username: str, address: str) -> None:
        now = time.monotonic()
        if len(self._failures) >= MAX_TRACKED:
            for key in list(self._failures):
                self._recent(key, now)
            if len(self._failures) >= MAX_TRACKED:
                self._failures.clear()
        for key in (f"user:{username}", f"addr:{address}"):
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, username: str, address: str) -> None:
        self._failures.pop(f"user:{username}", None)
