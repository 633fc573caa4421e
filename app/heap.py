"""What a server process builds once stays out of the cyclic garbage collector's sight.

Python's full collection walks every container object the process holds.
Definitions, models and the search registry are most of a server's heap and
live as long as it does, so a collection walks them all to free nothing:
about 0.8 ms per thousand objects here, 127 ms for the 161,000 a server holds
after start-up and a first CarePlan, with every request in flight waiting
(docs.python.org/3/library/gc.html#gc.freeze). ``gc.freeze`` moves them into
a generation the collector never visits; objects frozen still die as soon
as nothing refers to them.

Two moments freeze: the end of start-up (``freeze_startup_heap``), and the
first use of a resource type whose fhir.resources model was not yet
imported (``freeze_new_modules``): models are imported on first use, since
importing all 128 builds about 540 pydantic classes and took 4 of the 7.5 s a
server needed to start.

Once the start-up heap is frozen, the collector also looks at young objects
less often (``YOUNG_OBJECTS_PER_COLLECTION``). Python's default runs a
collection of the youngest generation every 700 container objects allocated
and not yet freed. Under wrk that was about 180 young, 16 middle and 1.5 full
collections per second of creates: each young one moved the objects of the
requests then in flight into an older generation, until a full collection
(6 to 17 ms) walked them all to free nothing. With 100,000, the objects
alive at a time (about 20,000 under that load) never reach the threshold: no
collection ran in the measured phases, and the count stayed stable, so no
cyclic garbage piled up (BENCHMARKS.md, 2026-12-03 21:00).
"""

from __future__ import annotations

import gc
import sys

YOUNG_OBJECTS_PER_COLLECTION = 100_000
"""Container objects allocated and not freed between two collections of the youngest generation
(Python's default: 700; docs.python.org/3/library/gc.html#gc.set_threshold). The older generations
keep their default thresholds."""


def freeze_startup_heap() -> None:
    """Take what start-up built (definitions, registry, tables: most of the heap) out of the collector's
    sight.

    Once per process: a server process starts one app. A process that starts app after app (the
    tests) would otherwise freeze each one's garbage for good as the next one starts. The youngest
    generation is then collected every ``YOUNG_OBJECTS_PER_COLLECTION`` objects."""
    if gc.get_freeze_count():
        return
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_OBJECTS_PER_COLLECTION, middle, oldest)


def freeze_new_modules(modules_before: int) -> None:
    """After code that may import modules (a model's first use), given ``len(sys.modules)`` from before
    it: in a process whose start-up heap is frozen, what new modules built is frozen too, after a
    collection so that no garbage is frozen with it.

    Once per model and process, so the collection's pause (a few milliseconds once the start-up heap
    is frozen) is paid once, by the first request that uses the type."""
    if len(sys.modules) != modules_before and gc.get_freeze_count():
        gc.collect()
        gc.freeze()
