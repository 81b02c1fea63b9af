"""A circuit breaker: stop calling a dead dependency, probe it again after a cool-down."""

from __future__ import annotations

import threading
import time

__all__ = ["CircuitBreaker"]


class CircuitBreaker:
    """Closed → open after ``threshold`` consecutive failures → one probe after ``cooldown``.

    While open, :meth:`allow` answers ``False`` at once, so a dead server costs nothing per call.
    After ``cooldown`` seconds one caller is let through as a probe (half-open); its success
    closes the breaker, its failure opens it for another ``cooldown``. A probe that never
    reports back (cancelled, or ended by an error that is neither) costs one ``cooldown``: the
    next probe is let through after it. Thread-safe.
    """

    def __init__(self, *, threshold: int = 3, cooldown: float = 1.0) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {threshold}")
        if cooldown <= 0:
            raise ValueError(f"cooldown must be > 0, got {cooldown}")
        self.threshold = threshold
        self.cooldown = cooldown
        self._failures = 0
        self._opened_at = 0.0
        self._open_until = 0.0
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        """Whether calls are being skipped now."""
        return self._failures >= self.threshold

    def allow(self) -> bool:
        """Whether a call may go through now (``True`` for a half-open probe too)."""
        if self._failures < self.threshold:
            return True
        with self._lock:
            now = time.monotonic()
            if now < self._open_until:
                return False
            # One probe per cool-down, and no "probe in flight" state to clear: a probe that
            # never reports back (cancelled, a refused command) costs one cool-down, never the
            # tier for the rest of the process.
            self._open_until = now + self.cooldown
            return True

    def success(self, started: float | None = None) -> bool:
        """Record a success; return ``True`` when this closed an open breaker.

        Args:
            started: ``time.monotonic()`` when the call began. A call that began before the
                breaker last opened says nothing about the server now: it cannot close it.
        """
        if self._failures == 0:
            return False
        with self._lock:
            was_open = self._failures >= self.threshold
            if was_open and started is not None and started < self._opened_at:
                return False
            self._failures = 0
            return was_open

    def failure(self) -> bool:
        """Record a failure; return ``True`` when this opened the breaker."""
        with self._lock:
            was_open = self._failures >= self.threshold
            self._failures += 1
            if self._failures >= self.threshold:
                now = time.monotonic()
                self._opened_at = now
                self._open_until = now + self.cooldown
            return not was_open and self._failures >= self.threshold
