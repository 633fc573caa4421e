"""Transaction and batch Bundles (hl7.org/fhir/R4/http.html#transaction).

A transaction runs in one database transaction: any failing entry raises,
naming the entry, and nothing is stored. Order per the spec: DELETE, then
POST, then PUT and PATCH, then GET and HEAD (which therefore see the
transaction's own writes). Before the transaction opens, every entry is
parsed and every resource validated (CPU work kept out of the write lock).
Inside it, conditional creates, updates and deletes are resolved with the
search engine (their criteria locked as for the single interactions),
``urn:uuid:`` / ``urn:oid:`` fullUrls are mapped to the new ids, and every
``reference`` in every resource (extensions and contained resources
included) is rewritten. Conditional references (``Patient?identifier=...``)
are resolved after the creates, as R4's processing rules order it
(http.html#trules), so they can find a resource created in the same Bundle:
new resources are stored in rounds (``app.interactions.bulk``), those whose
conditional references all match first, then those whose references match
what the earlier rounds created. PUT and PATCH entries resolve theirs after
every create.

The read and search entries of one Bundle (a batch's entries together)
return at most ``FHIR_MAX_BUNDLE_RESPONSE_RESOURCES`` resources: later
searches get smaller pages (with ``next`` links), and an entry that has
nothing left to return within that budget fails with 413.

A batch processes each entry alone, in its own transaction; a failing entry
becomes its own error response and never affects the others.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy.ext.asyncio import AsyncConnection

from app import fhirjson
from app.errors import (
    FhirError,
    InvalidRequest,
    MultipleMatches,
    NoMatch,
    NotFound,
    PayloadTooLarge,
)
from app.interactions.bulk import PreparedCreate, prepare_create, store_creates
from app.interactions.bundle_entries import Entry, at_entry
from app.interactions.context import FhirContext, utc_now
from app.interactions.create import conditional_criteria
from app.interactions.delete import delete_in
from app.interactions.patch import patch_in
from app.interactions.read import read_in, vread_in
from app.interactions.references import (
    BUNDLE_LOCAL_PREFIXES,
    collect_references,
    conditional_references,
    match_conditional_reference,
    rewrite_references,
)
from app.interactions.request_context import RequestContext
from app.interactions.search import MAX_INCLUDED, SearchPage, find_ids, search_on
from app.interactions.update import check_id, update_in
from app.search.request import parse_search
from app.storage.gate import OPEN, ReadGate
from app.storage.repository import StoredVersion, read_current

MAX_CONDITIONAL_DELETES = 1000


@dataclass(slots=True)
class EntryResult:
    """What one entry did: the HTTP status and the version written or read (or a search page)."""

    status: int
    stored: StoredVersion | None = None
    search: SearchPage | None = None
    error: FhirError | None = None
    method: str = ""


@dataclass(slots=True)
class ResponseBudget:
    """How many more resources the read and search entries of one Bundle may return."""

    remaining: int

    def take(self, count: int) -> None:
        self.remaining -= count

    def refuse_when_spent(self) -> None:
        if self.remaining <= 0:
            raise PayloadTooLarge(
                "the read and search entries before this one return as many resources as one response carries; "
                "send this request on its own"
            )


@dataclass(frozen=True, slots=True)
class SearchLimits:
    default_count: int
    max_count: int
    budget: ResponseBudget | None = None


class Transaction:
    """One transaction's state: the id map, the keys it touches, the results."""

    def __init__(self, ctx: FhirContext, entries: list[Entry], limits: SearchLimits, gate: ReadGate = OPEN) -> None:
        self.ctx = ctx
        self.gate = gate  # what the caller may read: GET entries, conditional matching and references
        self.entries = entries
        self.limits = limits
        self.ids: dict[int, str] = {}  # entry index -> resource id it writes
        self.full_urls: dict[str, str] = {}  # fullUrl -> "Type/id"
        self.results: dict[int, EntryResult] = {}
        self.deleted: set[str] = set()
        self.touched: dict[str, int] = {}  # "Type/id" -> entry index
        self.conditional: dict[int, list[str]] = {}  # entry index -> conditional references still to resolve
        self.resolved: dict[str, str] = {}  # conditional reference -> "Type/id"

    # --- before the database transaction ------------------------------------

    def prepare(self) -> None:
        """Ids for new resources, the fullUrl map, and validation of every resource."""
        for entry in self.entries:
            try:
                self._prepare_entry(entry)
            except FhirError as exc:
                raise at_entry(entry.index, exc) from None

    def _prepare_entry(self, entry: Entry) -> None:
        if entry.method == "POST":
            self.ids[entry.index] = str(uuid.uuid4())
        elif entry.method in ("PUT", "PATCH", "DELETE") and entry.resource_id:
            self.ids[entry.index] = entry.resource_id
        if entry.full_url and entry.index in self.ids:
            if entry.full_url in self.full_urls:
                raise InvalidRequest(f"fullUrl '{entry.full_url}' appears twice in the Bundle")
            self.full_urls[entry.full_url] = f"{entry.resource_type}/{self.ids[entry.index]}"
        if entry.resource is not None:
            if entry.method == "PUT" and entry.resource_id:
                check_id(entry.resource_id, entry.resource)
            self.ctx.validator.validate(entry.resource_type, entry.resource)

    # --- inside it ----------------------------------------------------------------

    async def execute(self, conn: AsyncConnection) -> list[EntryResult]:
        await self._lock_named(conn)
        for entry in self.entries:  # spec order: DELETE, POST, PUT/PATCH, GET/HEAD
            if entry.method == "DELETE":
                await self._guard(entry, self._delete(conn, entry))
        for entry in self.entries:
            if entry.method in ("POST", "PUT", "PATCH"):
                await self._guard(entry, self._resolve_target(conn, entry))
        for entry in self.entries:
            if entry.method in ("POST", "PUT", "PATCH"):
                await self._guard(entry, self._rewrite_bundle_references(entry))
        await self._create_all(conn)
        for entry in self.entries:
            if entry.method in ("PUT", "PATCH"):
                await self._guard(entry, self._resolve_conditional(conn, entry, must_match=True))
                await self._guard(entry, self._update(conn, entry))
        for entry in self.entries:
            if entry.method in ("GET", "HEAD"):
                await self._guard(entry, self._read(conn, entry))
        return [self.results[e.index] for e in self.entries]

    async def _lock_named(self, conn: AsyncConnection) -> None:
        """Lock every resource the Bundle names by id, all at once and in one global order.

        Entries run in Bundle order, so two Bundles changing the same resources
        in opposite order would otherwise each hold a row the other waits for.
        Targets of conditional entries are only known after their search; a
        deadlock they cause is retried by ``Database.run_write``.
        """
        keys = [
            f"{entry.resource_type}/{entry.resource_id}"
            for entry in self.entries
            if entry.method in ("PUT", "PATCH", "DELETE") and entry.resource_id
        ]
        await self.ctx.db.lock_keys(conn, keys)

    async def _guard(self, entry: Entry, work: Any) -> None:
        try:
            await work
        except FhirError as exc:
            raise at_entry(entry.index, exc) from None

    def _touch(self, key: str, entry: Entry) -> None:
        other = self.touched.get(key)
        if other is not None and other != entry.index:
            raise InvalidRequest(f"{key} is also changed by Bundle.entry[{other}]; one entry per resource")
        self.touched[key] = entry.index

    async def _criteria_matches(self, conn: AsyncConnection, entry: Entry, query: str, limit: int) -> list[str]:
        criteria = conditional_criteria(self.ctx, entry.resource_type, query, "url")
        await self.ctx.db.lock_key(conn, f"{entry.resource_type}?{sorted(criteria.applied())}")
        return await find_ids(conn, criteria, limit, self.gate)

    async def _delete(self, conn: AsyncConnection, entry: Entry) -> None:
        if entry.resource_id:
            targets = [entry.resource_id]
        else:
            assert entry.query is not None
            targets = await self._criteria_matches(conn, entry, entry.query, MAX_CONDITIONAL_DELETES + 1)
            if len(targets) > MAX_CONDITIONAL_DELETES:
                raise MultipleMatches(f"the criteria match more than {MAX_CONDITIONAL_DELETES} resources")
        last = None
        for target in targets:
            key = f"{entry.resource_type}/{target}"
            self._touch(key, entry)
            outcome = await delete_in(self.ctx, conn, entry.resource_type, target, entry.if_match, self.gate)
            self.deleted.add(key)
            last = outcome
        stored = last.stored if last is not None else None
        self.results[entry.index] = EntryResult(204, stored, method="DELETE")

    async def _resolve_target(self, conn: AsyncConnection, entry: Entry) -> None:
        """Conditional create/update/patch -> the id the entry writes (or the existing match of a create)."""
        if entry.method == "POST" and entry.if_none_exist:
            matches = await self._criteria_matches(conn, entry, entry.if_none_exist, 2)
            if len(matches) > 1:
                raise MultipleMatches(f"ifNoneExist '{entry.if_none_exist}' matches more than one resource")
            if matches:
                existing = await read_current(conn, entry.resource_type, matches[0], self.gate)
                assert existing is not None
                self.ids[entry.index] = matches[0]
                self.results[entry.index] = EntryResult(200, existing, method="POST")
        elif entry.method in ("PUT", "PATCH") and entry.query:
            matches = await self._criteria_matches(conn, entry, entry.query, 2)
            if len(matches) > 1:
                raise MultipleMatches(f"the criteria '{entry.query}' match more than one {entry.resource_type}")
            if matches:
                self.ids[entry.index] = matches[0]
            elif entry.method == "PATCH":
                raise NotFound(f"no {entry.resource_type} matches '{entry.query}'")
            else:
                body_id = (entry.resource or {}).get("id")
                self.ids[entry.index] = body_id if isinstance(body_id, str) else str(uuid.uuid4())
            if entry.method == "PUT" and entry.resource is not None:
                body_id = entry.resource.get("id")
                if body_id is not None and body_id != self.ids[entry.index]:
                    raise InvalidRequest(f"id '{body_id}' differs from the matching resource")
        if entry.full_url and entry.index in self.ids:
            self.full_urls[entry.full_url] = f"{entry.resource_type}/{self.ids[entry.index]}"
        self._touch(f"{entry.resource_type}/{self.ids[entry.index]}", entry)

    @staticmethod
    def _document(entry: Entry) -> Any:
        return entry.resource if entry.patch is None else entry.patch[1]

    async def _rewrite_bundle_references(self, entry: Entry) -> None:
        """fullUrl references -> the ids of this Bundle; the conditional ones are noted for later."""
        document = self._document(entry)
        rewrite_references(document, self.full_urls.get)
        references = collect_references(document, set())
        for reference in references:
            if reference.startswith(BUNDLE_LOCAL_PREFIXES):
                raise InvalidRequest(f"reference '{reference[:120]}' is not the fullUrl of any entry in the Bundle")
        pending = conditional_references(sorted(references))
        if pending:
            self.conditional[entry.index] = pending

    async def _resolve_conditional(self, conn: AsyncConnection, entry: Entry, must_match: bool) -> bool:
        """Rewrite the entry's conditional references to what they match now; False when one matches
        nothing yet (``must_match`` makes that an error). Several matches are always an error."""
        document = self._document(entry)
        pending = self.conditional.get(entry.index)
        if not pending and not self.deleted:
            return True
        for reference in pending or []:
            if reference in self.resolved:
                continue
            matches = await match_conditional_reference(self.ctx, conn, reference, self.gate)
            if len(matches) > 1:
                raise MultipleMatches(f"conditional reference '{reference[:120]}' matches more than one resource")
            if not matches:
                if must_match:
                    raise NoMatch(f"conditional reference '{reference[:120]}' matches no resource")
                return False
            self.resolved[reference] = f"{reference.partition('?')[0]}/{matches[0]}"
        if pending:
            rewrite_references(document, self.resolved.get)
        for reference in collect_references(document, set()) if self.deleted else ():
            if reference.split("/_history/")[0] in self.deleted:
                raise InvalidRequest(f"the resource refers to {reference}, which this transaction deletes")
        return True

    async def _create_all(self, conn: AsyncConnection) -> None:
        """Store the new resources in rounds: each round those whose conditional references all match,
        so a reference can match a resource an earlier round created."""
        waiting = [e for e in self.entries if e.method == "POST" and e.index not in self.results]
        while waiting:
            ready: list[Entry] = []
            later: list[Entry] = []
            for entry in waiting:
                resolved = await self._guarded(entry, self._resolve_conditional(conn, entry, must_match=False))
                (ready if resolved else later).append(entry)
            if not ready:  # nothing more can appear: the first reference still unmatched is the error
                await self._guard(later[0], self._resolve_conditional(conn, later[0], must_match=True))
            await self._store_creates(conn, ready)
            waiting = later

    async def _guarded(self, entry: Entry, work: Any) -> Any:
        try:
            return await work
        except FhirError as exc:
            raise at_entry(entry.index, exc) from None

    async def _store_creates(self, conn: AsyncConnection, entries: list[Entry]) -> None:
        now = utc_now()
        prepared: list[tuple[Entry, PreparedCreate]] = []
        for entry in entries:
            assert entry.resource is not None
            try:
                created = prepare_create(
                    self.ctx, entry.resource_type, entry.resource, now, self.ids[entry.index], validate=False
                )
            except FhirError as exc:
                raise at_entry(entry.index, exc) from None
            prepared.append((entry, created))
            try:  # the write gate checks again; here the refusal names its entry
                self.gate.admits(entry.resource_type, created.version.id, created.rows, "c")
            except FhirError as exc:
                raise at_entry(entry.index, exc) from None
        await store_creates(self.ctx, conn, [p for _, p in prepared], self.gate)
        for entry, created in prepared:
            self.results[entry.index] = EntryResult(201, created.version, method="POST")

    async def _update(self, conn: AsyncConnection, entry: Entry) -> None:
        """PUT or PATCH one resource; without ``ifMatch`` a lost race is retried, as for a single request.

        A single PUT or PATCH does not take the transaction's locks, so it can
        commit a version between our read and our write. The compare in the
        write then fails, and the next attempt reads the winner (each statement
        sees what is committed, at READ COMMITTED) and writes the version after it.
        """
        resource_id = self.ids[entry.index]
        if entry.method == "PUT":
            assert entry.resource is not None
            body = {**entry.resource, "id": resource_id}
            rows = self.ctx.index_rows(entry.resource_type, resource_id, body)
            result = await update_in(
                self.ctx, conn, entry.resource_type, resource_id, body, rows, entry.if_match, gate=self.gate
            )
            self.results[entry.index] = EntryResult(result.status, result.stored, method=entry.method)
            return
        assert entry.patch is not None
        media_type, document = entry.patch
        patched = await patch_in(
            self.ctx, conn, entry.resource_type, resource_id, media_type, document, entry.if_match, self.gate
        )
        self.results[entry.index] = EntryResult(patched.status, patched.stored, method=entry.method)

    async def _read(self, conn: AsyncConnection, entry: Entry) -> None:
        budget = self.limits.budget
        if budget is not None:
            budget.refuse_when_spent()
        if entry.resource_id is None:
            pairs = parse_qsl(entry.query or "", keep_blank_values=True)
            request = parse_search(
                entry.resource_type, pairs, self.ctx.registry, self.limits.default_count, self.limits.max_count
            )
            most_included = MAX_INCLUDED
            if budget is not None:  # a smaller page (with its next link) keeps the response within bounds
                request = dataclasses.replace(request, count=min(request.count, budget.remaining))
                most_included = max(0, min(MAX_INCLUDED, budget.remaining - request.count))
            page = await search_on(conn, request, most_included, self.gate)
            if budget is not None:
                budget.take(len(page.matches) + len(page.included))
            self.results[entry.index] = EntryResult(200, search=page, method=entry.method)
            return
        if entry.version_id is not None:
            stored = await vread_in(conn, self.gate, entry.resource_type, entry.resource_id, entry.version_id)
        else:
            stored = await read_in(conn, self.gate, entry.resource_type, entry.resource_id)
        if budget is not None:
            budget.take(1)
        if entry.if_none_match is not None and entry.if_none_match == stored.version_id:
            self.results[entry.index] = EntryResult(304, stored, method=entry.method)
            return
        since = entry.if_modified_since
        if since is not None and stored.last_updated.replace(microsecond=0) <= since:
            self.results[entry.index] = EntryResult(304, stored, method=entry.method)
            return
        self.results[entry.index] = EntryResult(200, stored, method=entry.method)


async def run_transaction(
    ctx: FhirContext, rc: RequestContext, entries: list[Entry], limits: SearchLimits
) -> list[EntryResult]:
    """All entries or none; the first failure is raised, naming its entry.

    Entries are checked once; the database part may run more than once
    (``Database.run_write`` retries a deadlock), each time from the state
    ``prepare`` left: a new ``Transaction`` with the prepared ids, over copies
    of the resources and patches, since resolving references rewrites those
    in place. The copies come from bytes written before the first attempt.
    """
    gate = ctx.read_gate(rc.caller)
    prepared = Transaction(ctx, entries, limits, gate)
    if len(entries) > 1:  # validating many resources is CPU work: off the event loop
        await asyncio.to_thread(prepared.prepare)
    else:
        prepared.prepare()
    ids, full_urls = dict(prepared.ids), dict(prepared.full_urls)
    pristine = fhirjson.dumps([[e.resource, None if e.patch is None else e.patch[1]] for e in entries])
    attempts = 0
    budget_before = limits.budget.remaining if limits.budget is not None else 0

    async def attempt(conn: AsyncConnection) -> list[EntryResult]:
        nonlocal attempts
        attempts += 1
        if limits.budget is not None:  # what a rolled-back attempt read is not part of the response
            limits.budget.remaining = budget_before
        if attempts == 1:
            return await prepared.execute(conn)
        copies = [
            replace(e, resource=resource, patch=None if e.patch is None else (e.patch[0], document))
            for e, (resource, document) in zip(entries, fhirjson.loads(pristine), strict=True)
        ]
        transaction = Transaction(ctx, copies, limits, gate)
        transaction.ids, transaction.full_urls = dict(ids), dict(full_urls)
        return await transaction.execute(conn)

    return await ctx.db.run_write(attempt)


async def run_batch(
    ctx: FhirContext, rc: RequestContext, entries: list[Entry | FhirError], limits: SearchLimits
) -> list[EntryResult]:
    """Each entry on its own; a failure is that entry's result only."""
    results = []
    for entry in entries:
        if isinstance(entry, FhirError):
            results.append(EntryResult(0, error=entry))
            continue
        try:
            results.extend(await run_transaction(ctx, rc, [entry], limits))
        except FhirError as exc:
            results.append(EntryResult(0, error=exc, method=entry.method))
    return results
