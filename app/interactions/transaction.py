"""Transaction and batch Bundles (hl7.org/fhir/R4/http.html#transaction).

A transaction runs in one database transaction: any failing entry raises,
naming the entry, and nothing is stored. Order per the spec: DELETE, then
POST, then PUT and PATCH, then GET and HEAD (which therefore see the
transaction's own writes). Before the transaction opens, every entry is
parsed and every resource validated (CPU work kept out of the write lock).
Inside it, conditional creates, updates and deletes and conditional
references (``Patient?identifier=...``) are resolved with the search engine
(their criteria locked as for the single interactions), ``urn:uuid:`` /
``urn:oid:`` fullUrls are mapped to the new ids, and every ``reference`` in
every resource (extensions and contained resources included) is rewritten.
New resources are then stored together (``app.interactions.bulk``).

A batch processes each entry alone, in its own transaction; a failing entry
becomes its own error response and never affects the others.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import FhirError, Gone, InvalidRequest, MultipleMatches, NoMatch, NotFound, VersionConflict
from app.interactions.bulk import PreparedCreate, prepare_create, store_creates
from app.interactions.bundle_entries import Entry, at_entry
from app.interactions.context import FhirContext, WriteResult, utc_now
from app.interactions.create import conditional_criteria
from app.interactions.delete import RETRY, write_tombstone
from app.interactions.patch import patch_in_transaction
from app.interactions.search import SearchPage, find_ids, search_on
from app.interactions.update import check_id, write_version
from app.search.request import parse_search
from app.storage.repository import StoredVersion, read_current, read_version

MAX_CONDITIONAL_DELETES = 1000


@dataclass(slots=True)
class EntryResult:
    """What one entry did: the HTTP status and the version written or read (or a search page)."""

    status: int
    stored: StoredVersion | None = None
    search: SearchPage | None = None
    error: FhirError | None = None
    method: str = ""


@dataclass(frozen=True, slots=True)
class SearchLimits:
    default_count: int
    max_count: int


def rewrite_references(value: Any, resolve: Callable[[str], str | None]) -> Any:
    """Every ``reference`` string anywhere in ``value`` replaced where ``resolve`` knows it (in place)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                replacement = resolve(item)
                if replacement is not None:
                    value[key] = replacement
            else:
                rewrite_references(item, resolve)
    elif isinstance(value, list):
        for item in value:
            rewrite_references(item, resolve)
    return value


def collect_references(value: Any, out: set[str]) -> set[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                out.add(item)
            else:
                collect_references(item, out)
    elif isinstance(value, list):
        for item in value:
            collect_references(item, out)
    return out


def _is_conditional_reference(reference: str) -> bool:
    head, question, _ = reference.partition("?")
    return bool(question) and "/" not in head and head[:1].isupper()


class Transaction:
    """One transaction's state: the id map, the keys it touches, the results."""

    def __init__(self, ctx: FhirContext, entries: list[Entry], limits: SearchLimits) -> None:
        self.ctx = ctx
        self.entries = entries
        self.limits = limits
        self.ids: dict[int, str] = {}  # entry index -> resource id it writes
        self.full_urls: dict[str, str] = {}  # fullUrl -> "Type/id"
        self.results: dict[int, EntryResult] = {}
        self.deleted: set[str] = set()
        self.touched: dict[str, int] = {}  # "Type/id" -> entry index

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
        for entry in self.entries:  # spec order: DELETE, POST, PUT/PATCH, GET/HEAD
            if entry.method == "DELETE":
                await self._guard(entry, self._delete(conn, entry))
        for entry in self.entries:
            if entry.method in ("POST", "PUT", "PATCH"):
                await self._guard(entry, self._resolve_target(conn, entry))
        conditional: dict[str, str] = {}
        for entry in self.entries:
            if entry.method in ("POST", "PUT", "PATCH"):
                await self._guard(entry, self._resolve_references(conn, entry, conditional))
        await self._create_all(conn)
        for entry in self.entries:
            if entry.method in ("PUT", "PATCH"):
                await self._guard(entry, self._update(conn, entry))
        for entry in self.entries:
            if entry.method in ("GET", "HEAD"):
                await self._guard(entry, self._read(conn, entry))
        return [self.results[e.index] for e in self.entries]

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
        return await find_ids(conn, criteria, limit)

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
            outcome = await write_tombstone(self.ctx, conn, entry.resource_type, target, entry.if_match)
            if outcome is RETRY:
                raise VersionConflict(f"{key} was changed by another request; try again")
            self.deleted.add(key)
            last = outcome
        stored = last.stored if isinstance(last, WriteResult) else None
        self.results[entry.index] = EntryResult(204, stored, method="DELETE")

    async def _resolve_target(self, conn: AsyncConnection, entry: Entry) -> None:
        """Conditional create/update/patch -> the id the entry writes (or the existing match of a create)."""
        if entry.method == "POST" and entry.if_none_exist:
            matches = await self._criteria_matches(conn, entry, entry.if_none_exist, 2)
            if len(matches) > 1:
                raise MultipleMatches(f"ifNoneExist '{entry.if_none_exist}' matches more than one resource")
            if matches:
                existing = await read_current(conn, entry.resource_type, matches[0])
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

    async def _resolve_references(self, conn: AsyncConnection, entry: Entry, cache: dict[str, str]) -> None:
        document = entry.resource if entry.patch is None else entry.patch[1]
        for reference in collect_references(document, set()):
            if _is_conditional_reference(reference) and reference not in cache:
                resource_type, _, query = reference.partition("?")
                if resource_type not in self.ctx.resource_types:
                    raise InvalidRequest(f"conditional reference '{reference}' names an unknown type")
                criteria = conditional_criteria(self.ctx, resource_type, query, "reference")
                matches = await find_ids(conn, criteria, 2)
                if not matches:
                    raise NoMatch(f"conditional reference '{reference}' matches no resource")
                if len(matches) > 1:
                    raise MultipleMatches(f"conditional reference '{reference}' matches more than one resource")
                cache[reference] = f"{resource_type}/{matches[0]}"

        def resolve(reference: str) -> str | None:
            return self.full_urls.get(reference) or cache.get(reference)

        rewrite_references(document, resolve)
        for reference in collect_references(document, set()):
            if reference.split("/_history/")[0] in self.deleted:
                raise InvalidRequest(f"the resource refers to {reference}, which this transaction deletes")
            if reference.startswith(("urn:uuid:", "urn:oid:")):
                raise InvalidRequest(f"reference '{reference}' is not the fullUrl of any entry in the Bundle")

    async def _create_all(self, conn: AsyncConnection) -> None:
        now = utc_now()
        prepared: list[tuple[Entry, PreparedCreate]] = []
        for entry in self.entries:
            if entry.method != "POST" or entry.index in self.results:
                continue
            assert entry.resource is not None
            try:
                prepared.append(
                    (
                        entry,
                        prepare_create(
                            self.ctx, entry.resource_type, entry.resource, now, self.ids[entry.index], validate=False
                        ),
                    )
                )
            except FhirError as exc:
                raise at_entry(entry.index, exc) from None
        await store_creates(conn, [p for _, p in prepared])
        for entry, created in prepared:
            self.results[entry.index] = EntryResult(201, created.version, method="POST")

    async def _update(self, conn: AsyncConnection, entry: Entry) -> None:
        resource_id = self.ids[entry.index]
        if entry.method == "PATCH":
            assert entry.patch is not None
            media_type, document = entry.patch
            result = await patch_in_transaction(
                self.ctx, conn, entry.resource_type, resource_id, media_type, document, entry.if_match
            )
        else:
            assert entry.resource is not None
            body = {**entry.resource, "id": resource_id}
            rows = self.ctx.index_rows(entry.resource_type, resource_id, body)
            result = await write_version(self.ctx, conn, entry.resource_type, resource_id, body, rows, entry.if_match)
        if result is None:
            raise VersionConflict(f"{entry.resource_type}/{resource_id} was changed by another request; try again")
        self.results[entry.index] = EntryResult(result.status, result.stored, method=entry.method)

    async def _read(self, conn: AsyncConnection, entry: Entry) -> None:
        if entry.resource_id is None:
            pairs = parse_qsl(entry.query or "", keep_blank_values=True)
            request = parse_search(
                entry.resource_type, pairs, self.ctx.registry, self.limits.default_count, self.limits.max_count
            )
            self.results[entry.index] = EntryResult(200, search=await search_on(conn, request), method=entry.method)
            return
        key = f"{entry.resource_type}/{entry.resource_id}"
        if entry.version_id is not None:
            if not entry.version_id.isdigit():
                raise NotFound(f"{key} has no version '{entry.version_id}'")
            stored = await read_version(conn, entry.resource_type, entry.resource_id, int(entry.version_id))
            if stored is None:
                raise NotFound(f"{key} has no version {entry.version_id}")
        else:
            stored = await read_current(conn, entry.resource_type, entry.resource_id)
            if stored is None:
                raise NotFound(f"{key} is not known")
        if stored.deleted:
            raise Gone(f"{key} was deleted")
        if entry.if_none_match is not None and entry.if_none_match == stored.version_id:
            self.results[entry.index] = EntryResult(304, stored, method=entry.method)
            return
        if entry.if_modified_since:
            try:
                since = parsedate_to_datetime(entry.if_modified_since)
            except (TypeError, ValueError):
                raise InvalidRequest(f"ifModifiedSince '{entry.if_modified_since}' is not an HTTP date") from None
            if stored.last_updated.replace(microsecond=0) <= since:
                self.results[entry.index] = EntryResult(304, stored, method=entry.method)
                return
        self.results[entry.index] = EntryResult(200, stored, method=entry.method)


async def run_transaction(ctx: FhirContext, entries: list[Entry], limits: SearchLimits) -> list[EntryResult]:
    """All entries or none; the first failure is raised, naming its entry."""
    transaction = Transaction(ctx, entries, limits)
    transaction.prepare()
    async with ctx.db.write() as conn:
        return await transaction.execute(conn)


async def run_batch(ctx: FhirContext, entries: list[Entry | FhirError], limits: SearchLimits) -> list[EntryResult]:
    """Each entry on its own; a failure is that entry's result only."""
    results = []
    for entry in entries:
        if isinstance(entry, FhirError):
            results.append(EntryResult(0, error=entry))
            continue
        try:
            results.extend(await run_transaction(ctx, [entry], limits))
        except FhirError as exc:
            results.append(EntryResult(0, error=exc, method=entry.method))
    return results
