"""What a server builds once is frozen out of the cyclic collector's sight: at start-up, and when a
resource type's model is first imported."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from app.heap import YOUNG_OBJECTS_PER_COLLECTION, freeze_new_modules
from app.storage.migrate import upgrade


class Node:
    """A container the collector tracks."""

    def __init__(self) -> None:
        self.me = self


def tracked(value: object) -> bool:
    """Whether the collector's generations hold ``value`` (frozen objects are in none of them)."""
    return any(item is value for item in gc.get_objects())


def test_new_modules_are_frozen_only_in_a_process_whose_start_up_heap_is() -> None:
    gc.unfreeze()
    try:
        before = len(sys.modules) - 1  # as if a module had been imported since
        built = Node()
        freeze_new_modules(before)
        assert gc.get_freeze_count() == 0 and tracked(built)  # nothing frozen at start-up: nothing now
        gc.freeze()
        frozen = gc.get_freeze_count()
        built = Node()
        freeze_new_modules(len(sys.modules))  # nothing imported meanwhile
        assert gc.get_freeze_count() == frozen and tracked(built)
        garbage = Node()
        garbage_id = id(garbage)
        del garbage
        freeze_new_modules(before)
        assert gc.get_freeze_count() > frozen and not tracked(built)
        # the collection before the freeze freed the cycle instead of keeping it for good
        assert garbage_id not in {id(item) for item in gc.get_objects()}
    finally:
        gc.unfreeze()


SERVER_START = textwrap.dedent(
    """
    import asyncio, gc, json, sys
    from app.config import Settings
    from app.main import create_app

    async def main():
        application = create_app(Settings(database_url=sys.argv[1], auth="off", log_level="warning"))
        async with application.router.lifespan_context(application):
            started = {
                "careplan imported": "fhir.resources.R4B.careplan" in sys.modules,
                "frozen": gc.get_freeze_count(),
                "thresholds": gc.get_threshold(),
            }
            young_collections = []

            def count(phase, info):
                if phase == "start" and info["generation"] == 0:
                    young_collections.append(1)

            gc.callbacks.append(count)
            gc.collect()
            kept = [[index] for index in range(50_000)]  # 50,000 containers alive at once, as in a burst of requests
            started["young collections in 50,000 allocations"] = len(young_collections)
            del kept
            validator = application.state.fhir.current.validator
            validator.validate("CarePlan", {
                "resourceType": "CarePlan", "status": "active", "intent": "plan",
                "subject": {"reference": "Patient/p1"},
                "contained": [{"resourceType": "Goal", "lifecycleStatus": "active",
                               "description": {"text": "walk"}, "subject": {"reference": "Patient/p1"}}],
            })
            from fhir.resources.R4B.careplan import CarePlan
            from fhir.resources.R4B.goal import Goal
            tracked = {id(item) for item in gc.get_objects()}
            used = {
                "careplan imported": True,
                "frozen": gc.get_freeze_count(),
                "models tracked": [model.__name__ for model in (CarePlan, Goal) if id(model) in tracked],
            }
        print(json.dumps({"started": started, "used": used}))

    asyncio.run(main())
    """
)


def test_a_server_imports_a_model_on_first_use_and_freezes_what_it_built(tmp_path: Path) -> None:
    """Start-up imports no resource model (128 of them took 4 s) and, its heap frozen, collects young
    objects every 100,000 allocations; the first CarePlan, with a Goal contained, imports both models,
    and their classes leave the collector's sight like the start-up heap."""
    database = f"sqlite+aiosqlite:///{tmp_path}/heap.sqlite"
    upgrade(database)
    result = subprocess.run(
        [sys.executable, "-c", SERVER_START, database], check=True, capture_output=True, text=True, timeout=120
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    started, used = report["started"], report["used"]
    assert started["careplan imported"] is False
    # the youngest generation collected every 100,000 objects (default: 700, some 70 collections here)
    assert started["thresholds"] == [YOUNG_OBJECTS_PER_COLLECTION, 10, 10]
    assert started["young collections in 50,000 allocations"] == 0, started
    assert started["frozen"] > 100_000, started  # definitions and the search registry
    assert used["frozen"] > started["frozen"] + 5_000, report  # the two models and the datatypes they use
    assert used["models tracked"] == []
