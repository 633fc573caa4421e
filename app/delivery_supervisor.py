"""Keeps the Subscriptions delivery process (``fhir-server deliver``) running beside ``fhir-server serve``.

On PostgreSQL the workers leave delivery to that process
(``app.delivery_worker``), so it must not stay down: if it exits on its
own (a crash, an operator's kill) another is started after a pause, and
the events stored meanwhile wait in the outbox, none lost. It is stopped
with the server; if the server is killed, the kernel kills it too
(``PR_SET_PDEATHSIG``), as it would have died inside the server.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
import threading

LOG = logging.getLogger("fhir.cli")
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a child gets when the thread that started it ends
RESTART_SECONDS = 1.0
STOP_SECONDS = 30.0
COMMAND = (sys.executable, "-m", "app.cli", "deliver")


def _die_with_parent() -> None:
    """(In the child, before it runs.)"""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class DeliverySupervisor:
    """Starts the delivery process, starts another whenever it exits on its own, stops it on request."""

    def __init__(self, command: tuple[str, ...] = COMMAND) -> None:
        self._command = list(command)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="delivery-supervisor", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
        if self._watcher is not None:
            self._watcher.join(timeout=STOP_SECONDS)

    def _spawn(self) -> None:
        with self._lock:
            if not self._stopping.is_set():
                self._process = subprocess.Popen(self._command, preexec_fn=_die_with_parent)

    def _watch(self) -> None:
        """(Its own thread, alive as long as the server: the children it starts die with it.)"""
        while not self._stopping.is_set():
            process = self._process
            if process is None:
                return
            code = process.wait()
            if self._stopping.wait(RESTART_SECONDS):
                return
            LOG.error("the Subscription delivery process ended (exit status %s); starting another", code)
            self._spawn()
