"""The real ``fhir-server serve`` process for black-box tests: start it, wait until healthy, stop it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from tests.postgres_cluster import free_port

FHIR = {"Content-Type": "application/fhir+json"}
BIN = Path(sys.executable).parent


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    base: str
    log_path: Path
    log_start: int = 0  # where this test's part of the log begins (a server shared by several tests)

    def log(self) -> str:
        return self.log_path.read_bytes()[self.log_start :].decode(errors="replace")

    def from_here(self) -> RunningServer:
        """The same server, its log read from its present end on."""
        return replace(self, log_start=self.log_path.stat().st_size)


def start_server(
    database_url: str,
    log_path: Path,
    migrate: bool = False,
    auth: bool = False,
    settings: dict[str, str] | None = None,
) -> RunningServer:
    """``fhir-server serve`` on a free port; ``serve`` brings the schema up to date itself (the test
    databases come migrated already), ``migrate=True`` runs ``fhir-server migrate`` first;
    ``auth`` runs it as shipped, with SMART authorization on (the FHIR behaviour tests turn it off);
    ``settings``: more ``FHIR_*`` variables."""
    port = free_port()
    env = {**os.environ, "FHIR_DATABASE_URL": database_url, "FHIR_PORT": str(port), "FHIR_HOST": "127.0.0.1"}
    env["FHIR_AUTH"] = "on" if auth else "off"
    env.update(settings or {})
    env.pop("FHIR_BASE_URL", None)
    if migrate:
        subprocess.run([str(BIN / "fhir-server"), "migrate"], env=env, check=True, capture_output=True)
    log_file = log_path.open("wb")
    process = subprocess.Popen([str(BIN / "fhir-server"), "serve"], env=env, stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early: {log_path.read_text()}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return RunningServer(process, base, log_path)
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not become healthy")


def stop_server(running: RunningServer) -> None:
    """SIGTERM (the server finishes in-flight requests), then SIGKILL after 30 s."""
    if running.process.poll() is None:
        running.process.send_signal(signal.SIGTERM)
        try:
            running.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            running.process.kill()
