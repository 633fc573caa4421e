"""A throw-away PostgreSQL cluster for tests and benchmarks.

``initdb`` into a temporary directory (as the ``postgres`` user when running
as root) with trust auth, ``pg_ctl`` on a free loopback port, removed on stop.
Where ``initdb`` is missing and we are root, ``apt-get install -y postgresql``
is tried first.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """No way to run PostgreSQL on this machine."""


@dataclass
class Cluster:
    directory: Path
    port: int
    run_as: list[str]

    @property
    def admin_url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        pg_ctl = _find_binary("pg_ctl")
        if pg_ctl:
            subprocess.run(
                [*self.run_as, pg_ctl, "-D", str(self.directory / "data"), "-m", "immediate", "stop"],
                capture_output=True,
                check=False,
            )
        shutil.rmtree(self.directory, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _find_binary(name: str) -> str | None:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    if candidates:
        return candidates[0]
    return shutil.which(name)


def _install_postgres() -> None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], capture_output=True, check=False, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], capture_output=True, check=False, env=env)


def start_cluster(durable: bool = False, parent: str | None = None) -> Cluster:
    """Start a fresh cluster; ``durable=False`` turns fsync off (tests only). ``parent``: where the
    cluster's directory is made (the system's temporary directory by default)."""
    initdb = _find_binary("initdb")
    if initdb is None:
        _install_postgres()
        initdb = _find_binary("initdb")
    pg_ctl = _find_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise PostgresUnavailable("initdb/pg_ctl not found and PostgreSQL could not be installed")
    directory = Path(tempfile.mkdtemp(prefix="fhir-pg-", dir=parent))
    run_as: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    data = directory / "data"
    result = subprocess.run(
        [*run_as, initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        raise PostgresUnavailable(f"initdb failed: {result.stderr.strip()[-500:]}")
    port = free_port()
    options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c max_connections=200"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    result = subprocess.run(
        [*run_as, pg_ctl, "-D", str(data), "-o", options, "-l", str(directory / "server.log"), "-w", "start"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        log = (
            (directory / "server.log").read_text(errors="replace")[-1000:]
            if (directory / "server.log").exists()
            else ""
        )
        shutil.rmtree(directory, ignore_errors=True)
        raise PostgresUnavailable(f"pg_ctl start failed: {result.stderr.strip()} {log}")
    return Cluster(directory, port, run_as)
