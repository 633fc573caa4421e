"""Throughput and tail latency under a compiled load generator (wrk), with CPU per request.

    python -m bench.wrk --backends sqlite,postgresql --seconds 20 --connections 16 [--phases read,search,create]

The Python load generator of ``bench.crud`` needs a core of its own; wrk
does not, so the server gets the machine. For each backend this starts
``fhir-server serve`` (one uvicorn worker) on a fresh database, loads
CarePlans (``--patients`` patients with five active and two completed plans
each; on PostgreSQL followed by ``ANALYZE``, which autovacuum would run
within a minute of such a load: without statistics the planner drives
the search from the five-in-seven ``status=active`` rows, 11 ms instead
of 0.06), then runs one wrk phase per FHIR interaction for ``--seconds``:

* ``read``: ``GET CarePlan/[id]`` over the loaded ids;
* ``search``: ``GET CarePlan?subject=Patient/X&status=active`` (five matches);
* ``create``: ``POST CarePlan`` of ~1.4 KB bodies.

Each phase is measured after a 2 s warm-up on as many connections as it
measures (the first requests of a kind compile statements and fill caches,
and each pooled database connection first used is a new PostgreSQL backend
preparing its statements afresh; that start-up cost is not the steady state
this measures). A fresh PostgreSQL cluster is first given recycled WAL
segments (``bench.wal.recycle_wal_segments``), as a server that has run
through checkpoints has them: otherwise every 16 MB of WAL a commit creates
the next segment file while every other commit waits.

Latency is timed per request by the Lua script (``clock_gettime``), because
wrk's own percentiles add made-up samples for slow responses. wrk's
``--threads`` (default 2, wrk's own) share the connections, whose answers
come back in any order: each request carries an ``X-Request-Id`` that the
server echoes, and its answer is matched by it. The first request on each
connection also waits for the server to accept that connection while the
others' requests are already in flight (wrk opens them all at once), and
until every connection has had its first answer the server's event loop is
still setting connections up between requests: what a thread sent until then
is left out of the percentiles and reported apart ("opening": its requests
and their maximum; under 16 connections about the first 50 to 200 ms).
The report gives req/s, p50/p95/p99/max and the CPU time per request of the
server process and of all PostgreSQL processes (from /proc); ``--wal-waits``
adds the longest WAL I/O a backend waited on in each phase (``bench.wal``),
and ``--windows`` cuts each phase into 200 ms windows by when its requests
ended, to tell a maximum reached while the whole server ran slower (the
host's own speed varies: ``bench.host``) from one reached at its usual pace
(``bench.windows``).
``--in-memory`` keeps the PostgreSQL cluster and the SQLite file on tmpfs:
every commit still flushes, but to memory, so a maximum no longer includes
the disk's own stalls (on the benchmark's VM, one write alone on the disk
has taken 145 ms): a control, beside the durable figures.
wrk comes from Debian (``apt-get install -y wrk``, run by this script when it
is missing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import orjson

from bench.crud import BIN, run_phase, serve, server_env
from bench.data import care_plan
from bench.wal import WalWaits, WalWaitSampler, recycle_wal_segments
from bench.windows import Windows, cut_into_windows, read_samples
from tests.postgres_cluster import Cluster, free_port, start_cluster

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MEMORY = "/dev/shm"  # tmpfs on Linux: --in-memory

LUA = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local clock = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, clock)  -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local paths = dofile("%(paths)s")
local bodies = dofile("%(bodies)s")
local method = "%(method)s"
local expected = %(expected)d
local per_thread = %(per_thread)d  -- wrk gives each thread connections / threads connections
local windows_file = "%(windows)s"  -- each request's end and latency written here (--windows), or ""
local headers = {["Content-Type"] = "application/fhir+json", ["Accept"] = "application/fhir+json"}

local threads = {}
function setup(thread)
  thread:set("offset", #threads * 7919)
  thread:set("prefix", "w" .. #threads)
  -- wrk builds one request in its first thread to check the script before any connection opens
  -- (script_verify_request): that one is never sent, so it must not take an id
  thread:set("checking", #threads == 0)
  table.insert(threads, thread)
end

latencies = {}
ends = {}  -- when each of latencies ended (ms, CLOCK_MONOTONIC), for --windows
opening = {}  -- requests sent before each of the thread's connections had its first answer
errors = 0
local counter = 0
local started = {}
local first_answers = 0
local opened_at = nil  -- when the last of the thread's connections had its first answer

-- A thread's connections answer in any order: each request carries an X-Request-Id the server
-- echoes, and its response is timed from the moment that id's request was built. A thread opens
-- all its connections at once and sends one request on each before any answer can come back, so
-- its first per_thread requests are the first on each connection: they also wait for the server
-- to accept that connection while the others' requests are in flight. Until every connection has
-- had its first answer the server is still setting connections up between requests, so every
-- request sent until then is reported apart ("opening"), not in the percentiles.
function request()
  if checking then
    checking = false
    return wrk.format(method, paths[1], headers, bodies[1])
  end
  counter = counter + 1
  local n = counter + offset
  local body = nil
  if #bodies > 0 then body = bodies[(n %% #bodies) + 1] end
  local id = prefix .. "-" .. counter
  headers["X-Request-Id"] = id
  started[id] = now_ms()
  return wrk.format(method, paths[(n %% #paths) + 1], headers, body)
end

function response(status, response_headers, body)
  local ended = now_ms()
  local id = response_headers["x-request-id"] or response_headers["X-Request-Id"]
  local start = id and started[id]
  if start then
    if tonumber(string.match(id, "-(%%d+)$")) <= per_thread then
      first_answers = first_answers + 1
      if first_answers == per_thread then opened_at = ended end
      opening[#opening + 1] = ended - start
    elseif opened_at == nil or start < opened_at then
      opening[#opening + 1] = ended - start
    else
      latencies[#latencies + 1] = ended - start
      ends[#ends + 1] = ended
    end
    started[id] = nil
  end
  if status ~= expected or not start then errors = errors + 1 end
end

function done(summary, latency, requests)
  local all = {}
  local opening_max = 0
  local opening_count = 0
  local failed = 0
  for _, thread in ipairs(threads) do
    local own = thread:get("latencies")
    for i = 1, #own do all[#all + 1] = own[i] end
    local own_opening = thread:get("opening")
    for i = 1, #own_opening do opening_max = math.max(opening_max, own_opening[i]) end
    opening_count = opening_count + #own_opening
    failed = failed + thread:get("errors")
  end
  if windows_file ~= "" then
    local file = io.open(windows_file, "w")
    for _, thread in ipairs(threads) do
      local own, own_ends = thread:get("latencies"), thread:get("ends")
      for i = 1, #own do file:write(string.format("%%.3f %%.3f\n", own_ends[i], own[i])) end
    end
    file:close()
  end
  table.sort(all)
  local function at(fraction) return all[math.max(1, math.ceil(fraction * #all))] end
  io.write(string.format("RESULT %%d %%d %%.3f %%.3f %%.3f %%.3f %%d %%.3f %%d\n",
    #all + opening_count, summary.duration, at(0.5), at(0.95), at(0.99), all[#all], failed, opening_max,
    opening_count))
end
"""


@dataclass
class WrkResult:
    phase: str
    requests: int
    seconds: float
    p50: float
    p95: float
    p99: float
    max: float
    errors: int
    opening_max: float  # requests sent before every connection had its first answer: not in the percentiles
    opening_count: int
    server_cpu: float  # seconds
    database_cpu: float  # seconds
    wal_waits: WalWaits | None  # with --wal-waits on PostgreSQL
    windows: Windows | None  # with --windows

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def row(self) -> str:
        server_us = self.server_cpu / self.requests * 1e6
        database_us = f"{self.database_cpu / self.requests * 1e6:,.0f}" if self.database_cpu else "-"
        return (
            f"| {self.phase} | {self.requests:,} | {self.rate:,.0f} | {self.p50:.1f} | {self.p95:.1f} | "
            f"{self.p99:.1f} | {self.max:.1f} | {self.p99 / self.p50:.1f} | "
            f"{self.opening_count:,}, {self.opening_max:.1f} | {server_us:,.0f} | "
            f"{database_us} |"
        )


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not installed and apt-get could not install it")
    return found


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (/proc/[pid]/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children_cpu(parent: int) -> float:
    """CPU of every live child of ``parent`` (the PostgreSQL backends and workers of a postmaster)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def lua_strings(values: list[str]) -> str:
    return "return {" + ",".join(f"[==[{value}]==]" for value in values) + "}\n"


def run_wrk(
    wrk: str,
    port: int,
    phase: str,
    method: str,
    paths: list[str],
    bodies: list[bytes],
    expected: int,
    args: argparse.Namespace,
    server_pid: int,
    postmaster: int | None,
    dsn: str | None,
) -> WrkResult:
    directory = Path(tempfile.mkdtemp(prefix="fhir-wrk-"))
    (directory / "paths.lua").write_text(lua_strings(paths))
    (directory / "bodies.lua").write_text(lua_strings([body.decode() for body in bodies]))
    script = LUA % {
        "paths": directory / "paths.lua",
        "bodies": directory / "bodies.lua",
        "method": method,
        "expected": expected,
        "per_thread": args.connections // min(args.threads, args.connections),
        "windows": directory / "windows.txt" if args.windows else "",
    }
    (directory / "phase.lua").write_text(script)
    # first statements compiled and prepared, caches filled, and as many pooled connections opened
    # (each a new PostgreSQL backend preparing its statements afresh) as the measured load will use
    connections = f"-c{args.connections}"
    threads = f"-t{min(args.threads, args.connections)}"
    warm_up = [wrk, threads, connections, "-d2s", "-s", str(directory / "phase.lua")]
    subprocess.run([*warm_up, f"http://127.0.0.1:{port}"], check=True, capture_output=True)
    server_before = process_cpu(server_pid)
    database_before = children_cpu(postmaster) if postmaster else 0.0
    command = [
        wrk,
        threads,
        connections,
        f"-d{args.seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(directory / "phase.lua"),
        f"http://127.0.0.1:{port}",
    ]
    sampler = WalWaitSampler(dsn) if args.wal_waits and dsn is not None else None
    with sampler or contextlib.nullcontext():
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    server_cpu = process_cpu(server_pid) - server_before
    database_cpu = (children_cpu(postmaster) - database_before) if postmaster else 0.0
    windows = cut_into_windows(read_samples(directory / "windows.txt"), args.window_ms) if args.windows else None
    shutil.rmtree(directory, ignore_errors=True)
    line = next(text for text in output.splitlines() if text.startswith("RESULT "))
    count, micros, p50, p95, p99, most, errors, opening_max, opening_count = line.split()[1:]
    return WrkResult(
        phase,
        int(count),
        int(micros) / 1e6,
        float(p50),
        float(p95),
        float(p99),
        float(most),
        int(errors),
        float(opening_max),
        int(opening_count),
        server_cpu,
        database_cpu,
        sampler.waits if sampler is not None else None,
        windows,
    )


def care_plans(patients: int) -> list[tuple[str, bytes]]:
    """Five active and two completed CarePlans per patient, as (patient, body)."""
    rng = random.Random(42)
    loaded = []
    for index in range(patients * 7):
        plan = care_plan(index, rng)
        patient = f"Patient/w{index % patients}"
        plan["subject"] = {"reference": patient}
        plan["status"] = "active" if index // patients < 5 else "completed"
        loaded.append((patient, orjson.dumps(plan)))
    return loaded


def server_pid(port: int) -> int:
    """The pid of the process listening on ``port`` (the one uvicorn worker)."""
    wanted = f"{port:04X}"
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(f":{wanted}") and fields[3] == "0A":  # LISTEN
                inodes.add(fields[9])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(entry.name)
        except OSError:
            continue
    raise RuntimeError(f"no process listens on port {port}")


async def bench_backend(wrk: str, url: str, args: argparse.Namespace, postmaster: int | None) -> list[WrkResult]:
    port = free_port()
    env = server_env(url, port)
    subprocess.run([str(BIN / "fhir-server"), "migrate"], env=env, check=True, capture_output=True)
    loaded = care_plans(args.patients)
    with serve([str(BIN / "fhir-server"), "serve"], env, port):
        _, locations = await run_phase(
            "load", port, args.connections, [("POST", "/fhir/CarePlan", body) for _, body in loaded], 201
        )
        ids = [location.decode().split("/CarePlan/")[1].split("/")[0] for location in locations]
        pid = server_pid(port)
        rng = random.Random(7)
        reads = [f"/fhir/CarePlan/{rng.choice(ids)}" for _ in range(2000)]
        subjects = sorted({patient for patient, _ in loaded})
        searches = [f"/fhir/CarePlan?subject={rng.choice(subjects)}&status=active" for _ in range(2000)]
        dsn = url.replace("postgresql+asyncpg", "postgresql") if postmaster is not None else None
        if dsn is not None:  # the statistics autovacuum gathers within a minute of a load
            connection = await asyncpg.connect(dsn)
            await connection.execute("ANALYZE")
            await connection.close()
        check = httpx.get(f"http://127.0.0.1:{port}{searches[0]}&_total=accurate").json()
        if check.get("total") != 5:
            raise RuntimeError(f"the search phase expects five matches, found {check.get('total')}")
        creates = [body for _, body in loaded[:200]]
        phases = {
            "read": lambda: run_wrk(wrk, port, "read", "GET", reads, [], 200, args, pid, postmaster, dsn),
            "search": lambda: run_wrk(wrk, port, "search", "GET", searches, [], 200, args, pid, postmaster, dsn),
            "create": lambda: run_wrk(
                wrk, port, "create", "POST", ["/fhir/CarePlan"], creates, 201, args, pid, postmaster, dsn
            ),
        }
        return [phases[name]() for name in args.phases.split(",")]


def report(title: str, results: list[WrkResult]) -> None:
    print(f"\n### {title}")
    print(
        "| phase | requests | req/s | p50 ms | p95 ms | p99 ms | max ms | p99/p50 | opening: requests, max ms "
        "| server CPU us/req | PostgreSQL CPU us/req |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for result in results:
        print(result.row())
        if result.errors:
            print(f"\n{result.errors} {result.phase} requests got an unexpected status")
    for result in results:
        if result.windows is not None:
            print(f"\n{result.windows.line(result.phase)}")
    for result in results:
        if result.wal_waits is not None:
            waits = result.wal_waits
            print(
                f"\n{result.phase}: the longest WAL I/O of one backend {waits.longest_io_ms:.1f} ms, at most "
                f"{waits.most_queued} backends queued behind it; a new WAL segment being created in "
                f"{waits.segment_inits:,} of {waits.samples:,} samples"
            )


def postmaster_pid(cluster: Cluster) -> int:
    return int((cluster.directory / "data" / "postmaster.pid").read_text().split()[0])


async def main_async(args: argparse.Namespace) -> None:
    wrk = ensure_wrk()
    print(
        f"# wrk benchmark {time.strftime('%Y-%m-%d %H:%M')} on {platform.node()}: {os.cpu_count()} cores, "
        f"{args.connections} connections on {min(args.threads, args.connections)} wrk threads, "
        f"{args.seconds} s per phase, {args.patients * 7:,} CarePlans loaded"
        + (f", databases in {MEMORY}" if args.in_memory else "")
    )
    cluster = None
    storage = MEMORY if args.in_memory else None
    sqlite_directories: list[str] = []  # removed at the end: in memory, each holds about 90 MB
    try:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                sqlite_directories.append(tempfile.mkdtemp(prefix="fhir-wrk-", dir=storage))
                url = f"sqlite+aiosqlite:///{sqlite_directories[-1]}/fhir.sqlite"
                postmaster = None
            else:
                fresh = cluster is None
                if cluster is None:
                    cluster = start_cluster(durable=True, parent=storage)
                admin = await asyncpg.connect(cluster.admin_url.replace("postgresql+asyncpg", "postgresql"))
                if fresh and not args.fresh_wal:  # 48 segments: 768 MB, more than the load and the phases write
                    await recycle_wal_segments(admin, 48)
                if fresh and args.commit_without_flush:  # an experiment, never a server's setting for real data
                    await admin.execute("ALTER SYSTEM SET synchronous_commit = off")
                    await admin.execute("SELECT pg_reload_conf()")
                await admin.execute("DROP DATABASE IF EXISTS bench_wrk")
                await admin.execute("CREATE DATABASE bench_wrk")
                await admin.close()
                url = cluster.url("bench_wrk")
                postmaster = postmaster_pid(cluster)
            report(f"fhir-server on {backend}", await bench_backend(wrk, url, args, postmaster))
    finally:
        if cluster is not None:
            cluster.stop()
        for directory in sqlite_directories:
            shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--threads", type=int, default=2, help="wrk threads sharing the connections (wrk's own default: 2)"
    )
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--patients", type=int, default=400)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--phases", default="read,search,create", help="a comma-separated subset, run in this order")
    parser.add_argument(
        "--fresh-wal", action="store_true", help="no recycled WAL segments: each is created as the writes reach it"
    )
    parser.add_argument(
        "--commit-without-flush",
        action="store_true",
        help="synchronous_commit = off: a commit does not wait for its WAL to reach the disk, to tell the "
        "server's own tail from the disk's flushes (an experiment: a crash may lose the last commits)",
    )
    parser.add_argument(
        "--in-memory",
        action="store_true",
        help=f"the PostgreSQL cluster and the SQLite file in {MEMORY} (tmpfs): commits still flush, to memory, "
        "to tell the server's own tail from the disk's stalls (a control: nothing survives the machine)",
    )
    parser.add_argument(
        "--wal-waits",
        action="store_true",
        help="sample PostgreSQL's WAL flush waits during each phase (bench.wal; costs some CPU)",
    )
    parser.add_argument(
        "--windows",
        action="store_true",
        help="cut each phase into windows by when its requests ended and report the slowest windows and the "
        "longest latency inside and outside them (bench.windows)",
    )
    parser.add_argument("--window-ms", type=float, default=200.0, help="the length of a window for --windows")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
