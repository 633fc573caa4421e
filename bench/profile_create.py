"""Where a create spends its time: per-stage timings of the create path, in-process.

    python -m bench.profile_create --count 2000

Times, per CarePlan, each stage that ``app.interactions.create`` runs, measured
by calling the same functions on the same bodies: JSON parsing, the FHIR JSON
rules, structure (the model walk, and building the fhir.resources R4B model
for comparison), required-binding checks, index
extraction, stamping and rendering the stored bytes, and what exact decimals cost
against orjson's float parsing and rendering (json.html: decimals keep their digits); then the whole create interaction
sequentially on SQLite and on PostgreSQL (throw-away durable cluster). The
SQL share is the interaction time minus the CPU stages.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections.abc import Callable
from typing import Any

import orjson

from app import fhirjson
from app.interactions.context import utc_now
from app.interactions.create import create
from app.interactions.request_context import RequestContext
from app.interactions.stamping import stamp
from app.main import build_context
from app.search.extraction import Extractor
from app.search.indexing import build_index_rows
from app.search.registry import load_registry
from app.storage.database import Database
from app.storage.migrate import upgrade
from app.validation.bindings import BindingTable
from app.validation.json_rules import JsonLimits, JsonRules, load_element_table
from app.validation.model_walk import ModelWalk
from app.validation.narrative import narrative_problems
from app.validation.structure import structural_problems
from bench.data import care_plan
from tests.postgres_cluster import start_cluster


def per_item_us(function: Callable[[Any], Any], items: list[Any]) -> float:
    started = time.perf_counter()
    for item in items:
        function(item)
    return (time.perf_counter() - started) / len(items) * 1e6


async def interaction_us(url: str, bodies: list[dict[str, Any]]) -> tuple[float, float]:
    """(wall, CPU of this process) microseconds per sequential create."""
    db = Database.from_url(url, sqlite_inline=url.startswith("sqlite"))  # as one server process runs it
    ctx = build_context(db)
    for body in bodies[:50]:  # warm caches and connections
        await create(ctx, RequestContext(), "CarePlan", body)
    started, cpu_started = time.perf_counter(), time.process_time()
    for body in bodies:
        await create(ctx, RequestContext(), "CarePlan", body)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    await db.dispose()
    return elapsed / len(bodies) * 1e6, cpu / len(bodies) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    rng = random.Random(3)
    bodies = [care_plan(i, rng) for i in range(args.count)]
    raw = [orjson.dumps(b) for b in bodies]
    bindings = BindingTable.load()
    extractor = Extractor(load_registry(["CarePlan"]))
    extractor.compiled_for("CarePlan")
    now = utc_now()
    walk = ModelWalk()
    structural_problems("CarePlan", bodies[0])
    structural_problems("CarePlan", bodies[0], walk)
    extract_us = per_item_us(lambda b: extractor.extract("CarePlan", b), bodies)
    rows_us = per_item_us(lambda b: build_index_rows("CarePlan", "id", extractor.extract("CarePlan", b)), bodies)
    rules = JsonRules(load_element_table(), JsonLimits(), narrative_problems)
    exact = [fhirjson.loads(r) for r in raw]
    orjson_parse = per_item_us(orjson.loads, raw)
    orjson_render = per_item_us(orjson.dumps, bodies)
    exact_parse = per_item_us(fhirjson.loads, raw)
    exact_render = per_item_us(fhirjson.dumps, exact)
    stages = {
        "parse JSON (exact decimals, duplicate keys refused)": exact_parse,
        "FHIR JSON rules (json_rules walk)": per_item_us(rules.check_resource, exact),
        "structure (fhir.resources R4B model built; not on the path)": 0.0,
        "structure (the model walk, app.validation.model_walk)": per_item_us(
            lambda b: structural_problems("CarePlan", b, walk), bodies
        ),
        "required bindings": per_item_us(bindings.check, bodies),
        "index extraction (search parameters)": extract_us,
        "index rows": rows_us - extract_us,
        "stamp + render stored bytes": per_item_us(lambda b: stamp(b, "id", 1, now), bodies),
    }
    model_us = per_item_us(lambda b: structural_problems("CarePlan", b), bodies)
    stages["structure (fhir.resources R4B model built; not on the path)"] = model_us
    cpu_total = sum(stages.values()) - model_us
    print(f"# create path, {args.count} CarePlans of ~{sum(map(len, raw)) // len(raw)} bytes, sequential")
    print("| stage | us per create |")
    print("|---|---|")
    for name, value in stages.items():
        print(f"| {name} | {value:.0f} |")
    decimal_cost = (exact_parse - orjson_parse) + (exact_render - orjson_render)
    print(
        f"| exact decimals: parse {exact_parse:.1f} vs orjson {orjson_parse:.1f}, render {exact_render:.1f} vs "
        f"orjson {orjson_render:.1f}; extra per create | {decimal_cost:.1f} |"
    )
    directory = tempfile.mkdtemp(prefix="fhir-profile-")
    sqlite_url = f"sqlite+aiosqlite:///{directory}/p.sqlite"
    upgrade(sqlite_url)
    sqlite_us = asyncio.run(interaction_us(sqlite_url, bodies))
    cluster = start_cluster(durable=True)
    try:
        upgrade(cluster.url("postgres"))
        pg_us = asyncio.run(interaction_us(cluster.url("postgres"), bodies))
    finally:
        cluster.stop()
    for name, (wall, cpu) in (("SQLite", sqlite_us), ("PostgreSQL", pg_us)):
        print(f"| exact-decimal cost as a share of the {name} create CPU | {decimal_cost / cpu:.1%} |")
        print(f"| create interaction on {name}, wall | {wall:.0f} |")
        print(
            f"| create interaction on {name}, CPU of the server process | {cpu:.0f} "
            f"(SQLAlchemy, driver and transaction handling: {cpu - cpu_total:.0f}) |"
        )


if __name__ == "__main__":
    main()
