"""What 1,000 active Subscriptions cost the writes, and how soon a notification arrives.

    python -m bench.subscriptions --backends sqlite,postgresql --requests 3000 --subscriptions 1000 --pairs 2 \
        [--matching patients|active] [--chunk 250] [--control]

For each backend and each of ``--pairs`` pairs it runs two ``fhir-server
serve`` processes (one uvicorn worker each) side by side on fresh databases,
one with ``--subscriptions`` Subscriptions that are ``off`` and one with the
same ones active, and POSTs the same ~2 KB CarePlans from 16 clients to each,
**interleaved**: ``--chunk`` creates (default 250) to one server, then the
same to the other, the first of each round alternating (and which server
starts first, from pair to pair), each chunk's
notifications awaited before the next (their delivery counts in the CPU
figures, the wait not in the rates). This machine's speed drifts by a fifth
within a minute; run one after the other, the two halves of a pair measured
the drift as much as the Subscriptions. Before the measured creates, as many clients each write eight
CarePlans of patients no Subscription follows, so that the server's
connection pool has grown to the load's size and each connection has
prepared the creates' statements: a new PostgreSQL backend costs
milliseconds of start-up, and the driver's first look-up of a statement's
types on a connection (``typeinfo_tree``) some 30 ms of planning, neither
of them a create's cost. Then as many CarePlans of the followed
patients, their notifications awaited and left out of the figures, so
that the notifying writes' statement (planned afresh for its first five
executions on each connection) and the delivery process's connections
(the same look-ups for its records) are past their first use too. The Subscriptions are mixed as a care-coordination
deployment would have them, most not matching these writes: criteria on
other types (Task owners, Communication recipients, ServiceRequest
performers, Encounters), CarePlans of other patients and
``--chained-percent`` (default 1) chained criteria
(``CarePlan?subject.family=...``, asked of the database at every CarePlan
write), and ``--topic-percent`` (default 20) topic-based Subscriptions
(Backport IG: task-assigned, referral-created, encounter-admit ... with
filters these writes do not meet). With ``--matching patients`` 9% of them
each follow one patient whose CarePlan is written (3% of the writes
notify; half of those by the careplan-changed topic); with
``--matching active`` two follow every active CarePlan (half a notification
per write: the cost of delivering). Notifications go by rest-hook to a
keep-alive receiver in a separate process on the loopback interface.

It prints creates per second with and without, their ratio per pair, and
the time from each matching write (the version's ``lastUpdated``, stamped
just before its commit) to the notification's arrival at the receiver:
p50, p95, max. Beside the rates, the CPU time per create of the server
(its worker and, on PostgreSQL, its delivery process) and of every
PostgreSQL process, from /proc, over the creates and the deliveries that
follow them: a steadier measure than the rates on a shared machine, whose
baselines move by a fifth between runs. PostgreSQL runs durable (fsync on)
in a throw-away cluster. With ``--control`` both servers' Subscriptions
are written ``off``: the pairs' ratios then show how far one pair strays
from 1 on this machine when nothing tells the two servers apart.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import asyncpg
import orjson

from bench.crud import BIN, fresh_database, run_phase, serve, server_env
from bench.data import care_plan
from bench.wrk import children_cpu, postmaster_pid, process_cpu, server_pid
from tests.postgres_cluster import Cluster, free_port, start_cluster

RECEIVER = r"""
import http.server, sys, time
out = open(sys.argv[2], "a", buffering=1)
class Receiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real endpoints are
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))  # the next request follows it
        out.write(f"{self.headers['X-Event-Id']} {time.time()}\n")
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Receiver).serve_forever()
"""


TOPICS = "http://care-plan-repository.org/SubscriptionTopic/"
WARM_UP_INDEX = 40_000  # ``care_plan(i)``'s patient is p<i>: the measured creates' patients are the first ones
TARGET = 0.9  # the target for creates per second with the Subscriptions over without
FOLLOWED_AGAIN = 50_000  # ``care_plan(FOLLOWED_AGAIN + i)``'s patient is p<i> too (patients are numbered modulo 50,000)
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
# topic, filter: care-coordination topic subscriptions that these CarePlan writes never match
TOPIC_KINDS = [
    ("task-assigned", "Task?owner=Practitioner/nurse-{i}"),
    ("task-status-changed", "Task?owner=Practitioner/nurse-{i}"),
    ("referral-created", "ServiceRequest?performer=Organization/clinic-{i}"),
    ("encounter-admit", "Encounter?patient=Patient/other-{i}"),
    ("communication-received", "Communication?recipient=Practitioner/pcp-{i}"),
    ("careplan-changed", "CarePlan?patient=Patient/elsewhere-{i}"),
]


def _criteria_body(text: str, endpoint: str) -> dict[str, object]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "bench",
        "criteria": text,
        "channel": {"type": "rest-hook", "endpoint": endpoint},
    }


def _topic_body(topic: str, filter_criteria: str, endpoint: str) -> dict[str, object]:
    return {
        "resourceType": "Subscription",
        "meta": {"profile": [BACKPORT + "backport-subscription"]},
        "status": "requested",
        "reason": "bench",
        "criteria": TOPICS + topic,
        "_criteria": {"extension": [{"url": BACKPORT + "backport-filter-criteria", "valueString": filter_criteria}]},
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content", "valueCode": "id-only"}]},
        },
    }


def subscriptions(count: int, endpoint: str, matching: str, chained_percent: int, topic_percent: int) -> list[bytes]:
    """``count`` Subscriptions, most never matching these writes. ``matching``: ``patients``: 9% of them
    each follow one patient whose CarePlan is written (3% of the writes notify; half of them by the
    careplan-changed topic); ``active``: two follow every active CarePlan (about half a notification per
    write). Of the others, ``topic_percent`` are topic-based (Backport IG) and ``chained_percent``
    chained criteria."""
    if matching == "active":
        criteria = ["CarePlan?status=active", "CarePlan?status=active&category=http://snomed.info/sct|734163000"]
        bodies = [_criteria_body(text, endpoint) for text in criteria]
    else:
        bodies = [
            _criteria_body(f"CarePlan?subject=Patient/p{n}", endpoint)
            if n % 2
            else _topic_body("careplan-changed", f"CarePlan?patient=Patient/p{n}", endpoint)
            for n in range(count * 9 // 100)
        ]
    kinds = [
        "Task?owner=Practitioner/nurse-{i}&status=requested",
        "Communication?recipient=Practitioner/pcp-{i}",
        "ServiceRequest?performer=Organization/clinic-{i}&intent=order",
        "Encounter?patient=Patient/other-{i}&status=finished",
        "CarePlan?subject=Patient/elsewhere-{i}",
        "CarePlan?subject=Patient/elsewhere-{i}&status=active",
    ]
    index = 0
    while len(bodies) < count:
        if index % 100 < chained_percent:
            bodies.append(_criteria_body(f"CarePlan?subject.family=nobody-{index}", endpoint))  # asked of the database
        elif index % 100 < chained_percent + topic_percent:
            topic, filter_criteria = TOPIC_KINDS[index % len(TOPIC_KINDS)]
            bodies.append(_topic_body(topic, filter_criteria.format(i=index), endpoint))
        else:
            bodies.append(_criteria_body(kinds[index % len(kinds)].format(i=index), endpoint))
        index += 1
    return [orjson.dumps(body) for body in bodies]


@dataclass
class Run:
    subscriptions: int
    creates_per_second: float
    latencies_ms: list[float]
    events: int
    worker_cpu_ms: float  # per create: the server's worker
    delivery_cpu_ms: float  # per create: its delivery process (PostgreSQL; on SQLite the worker delivers)
    database_cpu_ms: float  # per create: every PostgreSQL process

    @property
    def cpu_ms(self) -> float:
        return self.worker_cpu_ms + self.delivery_cpu_ms + self.database_cpu_ms

    def split(self) -> str:
        return f"{self.cpu_ms:.2f} ({self.worker_cpu_ms:.2f} + {self.delivery_cpu_ms:.2f} + {self.database_cpu_ms:.2f})"


async def handshakes_due(url: str) -> int:
    """Topic Subscriptions whose handshake has not been delivered yet."""
    query = "SELECT count(*) FROM subscription_state WHERE handshake_due AND active"
    if url.startswith("sqlite"):
        with sqlite3.connect(url.split("///", 1)[1]) as conn:
            return int(conn.execute(query).fetchone()[0])
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        return int(await conn.fetchval(query))
    finally:
        await conn.close()


async def occurred(url: str) -> dict[str, float]:
    """Event id -> the write's time (seconds since the epoch), from the outbox."""
    query = "SELECT subscription_id, event_number, occurred FROM subscription_events"
    if url.startswith("sqlite"):
        with sqlite3.connect(url.split("///", 1)[1]) as conn:
            rows = conn.execute(query).fetchall()
        return {f"{s}/{n}": datetime.fromisoformat(o).timestamp() for s, n, o in rows}
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        return {f"{r[0]}/{r[1]}": r[2].timestamp() for r in await conn.fetch(query)}
    finally:
        await conn.close()


def _cpu(server: int, postmaster: int | None) -> tuple[float, float, float]:
    """CPU seconds so far of the server process, of its children (the delivery process), and of
    PostgreSQL's processes."""
    return process_cpu(server), children_cpu(server), children_cpu(postmaster) if postmaster else 0.0


@dataclass
class Deployment:
    """One server on its own database and receiver, its Subscriptions written (``off`` when
    ``subscriptions`` is 0), ready for creates."""

    url: str
    subscriptions: int
    port: int
    arrivals: Path
    postmaster: int | None
    creates: int = 0
    seconds: float = 0.0
    worker_cpu: float = 0.0
    delivery_cpu: float = 0.0
    database_cpu: float = 0.0
    warm_up_events: set[str] = field(default_factory=set)

    async def prepare(self, args: argparse.Namespace, receiver_port: int) -> None:
        # the same Subscriptions are written in both deployments, "off" in the one without, so both
        # databases hold the same rows and have had the same writes before the measured creates
        endpoint = f"http://127.0.0.1:{receiver_port}/hooks"
        written = subscriptions(args.subscriptions, endpoint, args.matching, args.chained_percent, args.topic_percent)
        if not self.subscriptions or args.control:
            written = [body.replace(b'"status":"requested"', b'"status":"off"', 1) for body in written]
        await run_phase("subscribe", self.port, 4, [("POST", "/fhir/Subscription", body) for body in written], 201)
        deadline = time.monotonic() + 120  # the handshakes of new topic Subscriptions go out first
        while time.monotonic() < deadline and await handshakes_due(self.url):
            await asyncio.sleep(0.2)
        # the pool opens as many database connections as there are clients, and each prepares the
        # creates' statements (the driver looking up their types), before the measured creates: with
        # CarePlans of patients far from the measured ones', which no Subscription follows
        rng = random.Random(7)
        warm = [orjson.dumps(care_plan(WARM_UP_INDEX + n, rng)) for n in range(args.clients * 8)]
        await run_phase("warm-up", self.port, args.clients, [("POST", "/fhir/CarePlan", body) for body in warm], 201)
        # then as many CarePlans of the followed patients, and their notifications: the statement of a
        # notifying write is prepared and past its first plans on each connection, the delivery process's
        # pool has grown and its connections have looked up the types of its records; these events are
        # left out of the figures
        followed = max(1, args.subscriptions * 9 // 100)
        notifying = [orjson.dumps(care_plan(FOLLOWED_AGAIN + n % followed, rng)) for n in range(args.clients * 8)]
        await run_phase("warm-up", self.port, args.clients, [("POST", "/fhir/CarePlan", b) for b in notifying], 201)
        await self.wait_for_arrivals()
        self.warm_up_events = set(await occurred(self.url))

    async def wait_for_arrivals(self) -> None:
        events = len(await occurred(self.url))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and _lines(self.arrivals) < events:
            await asyncio.sleep(0.05)

    async def create(self, bodies: list[bytes], clients: int) -> None:
        """POST ``bodies``, then wait for their notifications to arrive: the creates' wall time counts,
        the CPU of both (the server's, its delivery process's, PostgreSQL's) too."""
        server = server_pid(self.port)
        before = _cpu(server, self.postmaster)
        result, _ = await run_phase("create", self.port, clients, [("POST", "/fhir/CarePlan", b) for b in bodies], 201)
        await self.wait_for_arrivals()
        after = _cpu(server, self.postmaster)
        self.creates += len(bodies)
        self.seconds += result.seconds
        self.worker_cpu += after[0] - before[0]
        self.delivery_cpu += after[1] - before[1]
        self.database_cpu += after[2] - before[2]

    async def result(self) -> Run:
        times = {event: at for event, at in (await occurred(self.url)).items() if event not in self.warm_up_events}
        latencies = []
        for line in self.arrivals.read_text().splitlines() if self.arrivals.exists() else []:
            event_id, arrived = line.split()
            if event_id in times:
                latencies.append((float(arrived) - times[event_id]) * 1000)
        per_create = 1000 / self.creates
        return Run(
            self.subscriptions,
            self.creates / self.seconds,
            sorted(latencies),
            len(times),
            self.worker_cpu * per_create,
            self.delivery_cpu * per_create,
            self.database_cpu * per_create,
        )


@asynccontextmanager
async def deployed(url: str, count: int, args: argparse.Namespace, postmaster: int | None) -> AsyncIterator[Deployment]:
    """A server for ``url`` with ``count`` active Subscriptions (0: the same ones, ``off``)."""
    port, receiver_port = free_port(), free_port()
    arrivals = Path(tempfile.mkdtemp(prefix="fhir-bench-hooks-")) / "arrivals.txt"
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(receiver_port), str(arrivals)])
    env = server_env(url, port)
    subprocess.run([str(BIN / "fhir-server"), "migrate"], env=env, check=True, capture_output=True)
    try:
        with serve([str(BIN / "fhir-server"), "serve"], env, port):
            deployment = Deployment(url, count, port, arrivals, postmaster)
            await deployment.prepare(args, receiver_port)
            yield deployment
    finally:
        receiver.terminate()
        receiver.wait()


async def interleaved(without: Deployment, with_: Deployment, bodies: list[bytes], args: argparse.Namespace) -> None:
    """The same creates to both servers, ``args.chunk`` at a time, alternately, which one goes first
    swapping each round: a machine whose speed drifts by a fifth over a minute slows both alike."""
    for number, start in enumerate(range(0, len(bodies), args.chunk)):
        chunk = bodies[start : start + args.chunk]
        for deployment in (without, with_) if number % 2 == 0 else (with_, without):
            await deployment.create(chunk, args.clients)


def _lines(path: Path) -> int:
    """Notifications of events received (handshakes carry no event id)."""
    return sum(1 for line in path.read_text().splitlines() if not line.startswith("None ")) if path.exists() else 0


def summary(ratios: list[float]) -> str:
    """The pairs' ratios in one line: their mean, how far they spread, and how many miss the 0.9 target
    (one pair's ratio moves by several hundredths from run to run on a shared machine)."""
    spread = f", standard deviation {statistics.stdev(ratios):.3f}" if len(ratios) > 1 else ""
    under = sum(1 for ratio in ratios if round(ratio, 2) < TARGET)
    mean = statistics.fmean(ratios)
    return f"with / without over {len(ratios)} pairs: mean {mean:.3f}{spread}; {under} under {TARGET}"


def percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(fraction * len(values)))] if values else float("nan")


async def main_async(args: argparse.Namespace) -> None:
    rng = random.Random(11)
    bodies = [orjson.dumps(care_plan(i, rng)) for i in range(args.requests)]
    print(
        f"# Subscriptions benchmark {time.strftime('%Y-%m-%d %H:%M')} on {platform.node()}: {os.cpu_count()} cores, "
        f"{args.requests} CarePlan creates from {args.clients} clients, {args.subscriptions} Subscriptions "
        f"(matching: {args.matching}, {args.chained_percent}% chained, {args.topic_percent}% topic-based)"
        + (" -- control: both servers' Subscriptions off" if args.control else "")
    )
    cluster: Cluster | None = None
    try:
        for backend in args.backends.split(","):
            if backend == "postgresql" and cluster is None:
                cluster = start_cluster(durable=True)
            print(f"\n### {backend}\n")
            print(
                "| pair | creates/s without | creates/s with | with / without | events | p50 ms | p95 ms | max ms "
                "| CPU ms/create without (worker + delivery + database) | with | with / without |"
            )
            print("|---|---|---|---|---|---|---|---|---|---|---|")
            ratios: list[float] = []
            for pair in range(args.pairs):
                postmaster = postmaster_pid(cluster) if backend == "postgresql" and cluster else None
                counts = [0, args.subscriptions] if pair % 2 == 0 else [args.subscriptions, 0]  # start order
                urls = [await fresh_database(backend, cluster, f"bench_subs_{pair}_{count}") for count in counts]
                async with (
                    deployed(urls[0], counts[0], args, postmaster) as first,
                    deployed(urls[1], counts[1], args, postmaster) as second,
                ):
                    base, subscribed = (first, second) if counts[0] == 0 else (second, first)
                    await interleaved(base, subscribed, bodies, args)
                    runs = {0: await base.result(), args.subscriptions: await subscribed.result()}
                without, with_ = runs[0], runs[args.subscriptions]
                ratios.append(with_.creates_per_second / without.creates_per_second)
                lat = with_.latencies_ms
                print(
                    f"| {pair + 1} | {without.creates_per_second:,.0f} | {with_.creates_per_second:,.0f} "
                    f"| {with_.creates_per_second / without.creates_per_second:.2f} | {with_.events:,} "
                    f"({len(lat):,} arrived) | {percentile(lat, 0.5):.0f} | {percentile(lat, 0.95):.0f} "
                    f"| {lat[-1] if lat else float('nan'):.0f} "
                    f"| {without.split()} | {with_.split()} "
                    f"| {with_.cpu_ms / without.cpu_ms:.2f} |"
                )
            print(f"\n{summary(ratios)}")
    finally:
        if cluster is not None:
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--subscriptions", type=int, default=1000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=250, help="creates sent to one server before the other's turn")
    parser.add_argument("--matching", choices=["patients", "active"], default="patients")
    parser.add_argument(
        "--control",
        action="store_true",
        help="write the Subscriptions 'off' in both servers: two identical servers, whose ratio shows how far "
        "one pair strays from 1 on this machine with nothing to tell them apart",
    )
    parser.add_argument(
        "--chained-percent",
        type=int,
        default=1,
        help="chained criteria (asked of the database at every CarePlan write)",
    )
    parser.add_argument(
        "--topic-percent", type=int, default=20, help="topic-based Subscriptions (Backport IG) among the others"
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
