"""A search query string -> ``SearchRequest``: pure, no I/O (search.html).

Unknown or unsupported parameters are dropped (and left out of the ``self``
link) unless the client asked for ``Prefer: handling=strict``, in which case
they are a 400, as are malformed values and unknown modifiers in any mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

from app.errors import InvalidRequest
from app.search.bounds import MAX_INCLUDES, MAX_SORT_KEYS, Budget, check_key, check_parameter_count, check_value
from app.search.params import parse_count, split_escaped
from app.search.registry import SearchParam, SearchRegistry
from app.search.subsetting import Subsetting, parse_subsetting
from app.search.types import PARAM_TYPES, SearchValue, ValueContext, param_type
from app.search.types.composite import parse_composite
from app.search.types.reference import is_type_modifier
from app.search.types.special import parse_missing

SUPPORTED_TYPES = frozenset(PARAM_TYPES) - {"composite"}
# Parameters that shape the result rather than select resources.
RESULT_PARAMS = frozenset({"_count", "_page", "_total", "_format", "_pretty", "_sort", "_summary", "_elements"})
SORTABLE_TYPES = frozenset({"token", "string", "reference", "date", "number", "quantity", "uri"})
TOTAL_MODES = frozenset({"none", "estimate", "accurate"})


def _cached_hash(clause: Clause | ChainClause | HasClause) -> int:
    """A clause's hash, computed once: clauses are long-lived (a Subscription's criteria) and are
    hashed at every write that checks them, as part of the key of the statement that numbers their
    events (``app.subscriptions.settled``)."""
    if not clause._hash:
        values = tuple(getattr(clause, f.name) for f in fields(clause) if f.compare)
        object.__setattr__(clause, "_hash", hash((type(clause).__name__, values)) or 1)
    return clause._hash


def _label(param: SearchParam) -> str:
    return f"{param.resource_type}.{param.code}"


@dataclass(frozen=True, slots=True)
class Clause:
    """One parameter occurrence: its typed values are ORed; clauses are ANDed. ``raw`` is the value as
    sent (for links); ``values`` hold what the parameter's type parsed (``app.search.types``), or a
    single ``MissingSearch`` for ``:missing``."""

    param: SearchParam
    modifier: str | None
    values: tuple[SearchValue, ...]
    name: str
    raw: str
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        return _cached_hash(self)

    def sexp(self) -> str:
        """``(token Task.status requested)``; several values are an ``or``; ``:missing`` is its own form."""
        if self.modifier == "missing":
            return f"(missing {_label(self.param)} {self.values[0].show()})"
        head = self.param.code if self.param.code in ("_id", "_lastUpdated") else self.param.type
        if self.modifier and not self.modifier[:1].isupper():  # a target type is part of the value
            head += f":{self.modifier}"
        forms = [f"({head} {_label(self.param)} {value.show()})" for value in self.values]
        return forms[0] if len(forms) == 1 else f"(or {' '.join(forms)})"


@dataclass(frozen=True, slots=True)
class ChainClause:
    """``ref.param=value``: the reference points at a resource (of one of the types) matching ``inner``."""

    param: SearchParam
    alternatives: tuple[tuple[str, AnyClause], ...]
    name: str
    raw: str
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        return _cached_hash(self)

    def sexp(self) -> str:
        """``(chain Task.owner (Practitioner (string Practitioner.name smith)))``, one group per target type."""
        groups = " ".join(f"({target} {inner.sexp()})" for target, inner in self.alternatives)
        return f"(chain {_label(self.param)} {groups})"


@dataclass(frozen=True, slots=True)
class HasClause:
    """``_has:Source:ref:param=value``: some ``Source`` matching ``inner`` references this resource."""

    source_type: str
    param: SearchParam
    inner: AnyClause
    name: str
    raw: str
    target_type: str = ""
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        return _cached_hash(self)

    def sexp(self) -> str:
        """``(has Task.patient (token Task.status requested))``."""
        return f"(has {_label(self.param)} {self.inner.sexp()})"


AnyClause = Clause | ChainClause | HasClause


@dataclass(frozen=True, slots=True)
class Include:
    """``_include=Source:param[:Target]`` or ``_revinclude=Source:param[:Target]`` (search.html#include).

    ``params`` are the reference parameters of ``source_type`` it follows
    (all of them for ``*``).
    """

    source_type: str
    params: tuple[SearchParam, ...]
    target_type: str | None
    reverse: bool
    iterate: bool
    name: str
    raw: str


@dataclass(frozen=True, slots=True)
class SortKey:
    """One ``_sort`` key; ``-code`` sorts descending (search.html#_sort)."""

    param: SearchParam
    descending: bool

    @property
    def text(self) -> str:
        return f"-{self.param.code}" if self.descending else self.param.code


@dataclass(frozen=True, slots=True)
class Compartment:
    """``[base]/Patient/123/CarePlan``: matches must reference Patient/123 through one of ``params``."""

    type: str
    id: str
    params: tuple[SearchParam, ...]


@dataclass(frozen=True, slots=True)
class SearchRequest:
    resource_type: str
    clauses: tuple[AnyClause, ...]
    count: int
    page_token: str | None
    total: str
    includes: tuple[Include, ...] = ()
    compartment: Compartment | None = None
    sort: tuple[SortKey, ...] = ()
    subsetting: Subsetting = field(default_factory=Subsetting)

    def sexp(self) -> str:
        """The selection as an s-expression: ``(and ...)`` of the clauses (and the compartment);
        ``(all)`` when nothing narrows it. Result parameters (_sort, _count, _include) are not part of it."""
        forms = [clause.sexp() for clause in self.clauses]
        if self.compartment is not None:
            forms.append(f"(compartment {self.compartment.type}/{self.compartment.id})")
        if not forms:
            return "(all)"
        return forms[0] if len(forms) == 1 else f"(and {' '.join(forms)})"

    @property
    def path(self) -> str:
        """Path of the search relative to the base, for links."""
        if self.compartment is None:
            return self.resource_type
        return f"{self.compartment.type}/{self.compartment.id}/{self.resource_type}"

    def applied(self) -> list[tuple[str, str]]:
        """The parameters actually used, for the ``self`` link."""
        applied = [(c.name, c.raw) for c in self.clauses] + [(i.name, i.raw) for i in self.includes]
        if self.sort:
            applied.append(("_sort", ",".join(key.text for key in self.sort)))
        if self.subsetting.summary is not None:
            applied.append(("_summary", self.subsetting.summary))
        if self.subsetting.elements:
            applied.append(("_elements", ",".join(self.subsetting.elements)))
        return applied


INCLUDE_PARAMS = frozenset({"_include", "_revinclude", "_include:iterate", "_revinclude:iterate"})


def parse_include(name: str, raw: str, registry: SearchRegistry) -> Include:
    """``Source:param[:Target]`` or ``Source:*``; malformed or unknown is a 400 naming the parameter."""
    parts = raw.split(":")
    if len(parts) not in (2, 3):
        raise InvalidRequest(f"{name}={raw}: expected [type]:[parameter] or [type]:[parameter]:[target type]", [name])
    source_type, code = parts[0], parts[1]
    target_type = parts[2] if len(parts) == 3 else None
    references = {c: p for c, p in registry.for_type(source_type).items() if p.type == "reference" and p.expression}
    if code == "*":
        params = tuple(references[c] for c in sorted(references))
    elif code in references:
        params = (references[code],)
    else:
        raise InvalidRequest(f"{name}={raw}: '{code}' is not a reference parameter of '{source_type}'", [name])
    narrows_wrongly = target_type is not None and len(params) == 1 and target_type not in params[0].targets
    if narrows_wrongly and params[0].targets and "Any" not in params[0].targets:
        raise InvalidRequest(f"{name}={raw}: '{source_type}:{code}' cannot point to '{target_type}'", [name])
    base, _, modifier = name.partition(":")
    return Include(source_type, params, target_type, base == "_revinclude", modifier == "iterate", name, raw)


def supported(param: SearchParam) -> bool:
    if param.code in ("_id", "_lastUpdated"):
        return True
    if param.type == "composite":
        return (
            bool(param.expression)
            and bool(param.components)
            and all(c.type in SUPPORTED_TYPES for c in param.components)
        )
    return param.type in SUPPORTED_TYPES and bool(param.expression)


def parse_search(
    resource_type: str,
    pairs: Sequence[tuple[str, str]],
    registry: SearchRegistry,
    default_count: int,
    max_count: int,
    strict: bool = False,
    compartment: tuple[str, str] | None = None,
) -> SearchRequest:
    clauses: list[AnyClause] = []
    count = default_count
    page_token = None
    total = "none"
    includes: list[Include] = []
    sort: tuple[SortKey, ...] = ()
    budget = Budget()
    check_parameter_count(pairs, RESULT_PARAMS | INCLUDE_PARAMS)
    for name, raw in pairs:
        check_value(name, raw)
        if name in INCLUDE_PARAMS:
            if len(includes) >= MAX_INCLUDES:
                raise InvalidRequest(f"at most {MAX_INCLUDES} _include and _revinclude parameters", [name])
            includes.append(parse_include(name, raw, registry))
            continue
        if name in RESULT_PARAMS:
            if name == "_count":
                count = min(parse_count(raw), max_count)
            elif name == "_page":
                page_token = raw
            elif name == "_sort":
                sort = parse_sort(resource_type, raw, registry, strict)
            elif name == "_total":
                if raw not in TOTAL_MODES:
                    raise InvalidRequest(f"_total '{raw}' must be one of none, estimate, accurate", ["_total"])
                total = raw
            continue
        clause = parse_clause(resource_type, name, name, raw, registry, strict, budget)
        if clause is not None:
            clauses.append(clause)
    resolved = resolve_compartment(resource_type, compartment, registry) if compartment else None
    subsetting = parse_subsetting(dict(pairs))
    return SearchRequest(
        resource_type, tuple(clauses), count, page_token, total, tuple(includes), resolved, sort, subsetting
    )


class _Unknown(Exception):
    """A parameter this server does not know: dropped, or a 400 under strict handling."""


def parse_clause(
    resource_type: str,
    key: str,
    name: str,
    raw: str,
    registry: SearchRegistry,
    strict: bool,
    budget: Budget | None = None,
) -> AnyClause | None:
    """One ``key=raw`` on ``resource_type``; ``name`` is the full parameter name for messages and links."""
    check_key(key)
    budget = budget or Budget()
    try:
        clause = _parse_clause(resource_type, key, name, raw, registry, budget)
    except _Unknown as exc:
        if strict:
            raise InvalidRequest(str(exc), [name]) from None
        return None
    budget.add_parameter(name, raw.count(",") + 1)
    return clause


def _parse_clause(
    resource_type: str, key: str, name: str, raw: str, registry: SearchRegistry, budget: Budget
) -> AnyClause:
    if key.startswith("_has:"):
        return _parse_has(resource_type, key, name, raw, registry, budget)
    head, dot, rest = key.partition(".")
    if dot:
        return _parse_chain(resource_type, head, rest, name, raw, registry, budget)
    code, _, modifier = key.partition(":")
    param = registry.get(resource_type, code)
    kind = None if param is None else param_type(param.code, param.type)
    if param is None or kind is None or not supported(param):
        raise _Unknown(f"unknown or unsupported search parameter '{code}' for {resource_type}")
    type_modifier = param.type == "reference" and bool(modifier) and is_type_modifier(param.targets, modifier)
    if modifier and modifier not in kind.modifiers and not type_modifier:
        raise InvalidRequest(f"modifier ':{modifier}' is not supported for parameter '{code}'", [name])
    context = ValueContext(name, modifier or None)
    if modifier == "missing":
        return Clause(param, "missing", (parse_missing(raw, context),), name, raw)
    texts = [v for v in split_escaped(raw, ",") if v != ""]
    if not texts:
        raise InvalidRequest(f"parameter '{name}' has no value", [name])
    if param.type == "composite":
        component_types = tuple(component.type for component in param.components)
        part_context = ValueContext(name, None)

        def parse_part(type_name: str, text: str) -> SearchValue:
            parsed: SearchValue = PARAM_TYPES[type_name].parse(text, part_context)
            return parsed

        values = tuple(parse_composite(text, context, component_types, parse_part) for text in texts)
    else:
        values = tuple(kind.parse(text, context) for text in texts)
    return Clause(param, modifier or None, values, name, raw)


def _reference_param(resource_type: str, code: str, registry: SearchRegistry) -> SearchParam:
    param = registry.get(resource_type, code)
    if param is None or param.type != "reference" or not param.expression:
        raise _Unknown(f"'{code}' is not a reference search parameter of {resource_type}")
    return param


def _parse_chain(
    resource_type: str, head: str, rest: str, name: str, raw: str, registry: SearchRegistry, budget: Budget
) -> ChainClause:
    """``subject:Patient.name=x`` (search.html#chaining); without a type, every target type that has the
    chained parameter is searched, as HAPI does.

    A target type that cannot follow the rest of the chain is left out; the
    others still restrict the result (dropping the whole parameter because
    one target lacks a link would widen it to every resource). Only when no
    target can follow is the parameter unknown.
    """
    code, _, type_modifier = head.partition(":")
    param = _reference_param(resource_type, code, registry)
    candidates = [type_modifier] if type_modifier else [t for t in param.targets if t in registry.by_type]
    if type_modifier and param.targets and type_modifier not in param.targets:
        raise InvalidRequest(f"{code} cannot point to {type_modifier}", [name])
    chained_code = rest.partition(".")[0].partition(":")[0]
    followed = [t for t in candidates if rest.startswith("_has:") or registry.get(t, chained_code) is not None]
    budget.add_chain_targets(name, len(followed))
    alternatives = []
    for target_type in followed:
        try:
            alternatives.append((target_type, _parse_clause(target_type, rest, name, raw, registry, budget)))
        except _Unknown:
            continue
    if not alternatives:
        raise _Unknown(f"no target of {resource_type}.{code} can follow '{rest[:80]}'")
    return ChainClause(param, tuple(alternatives), name, raw)


def _parse_has(
    resource_type: str, key: str, name: str, raw: str, registry: SearchRegistry, budget: Budget
) -> HasClause:
    """``_has:Task:patient:status=requested`` (search.html#has): referenced by a matching resource."""
    parts = key.split(":", 3)
    if len(parts) != 4 or not all(parts[1:]):
        raise InvalidRequest(f"{name}: expected _has:[type]:[reference parameter]:[parameter]", [name])
    _, source_type, code, rest = parts
    if source_type not in registry.by_type:
        raise _Unknown(f"unknown resource type '{source_type}' in {name}")
    param = _reference_param(source_type, code, registry)
    if param.targets and resource_type not in param.targets:
        raise InvalidRequest(f"{source_type}.{code} cannot point to {resource_type}", [name])
    inner = _parse_clause(source_type, rest, name, raw, registry, budget)
    return HasClause(source_type, param, inner, name, raw, resource_type)


def parse_sort(resource_type: str, raw: str, registry: SearchRegistry, strict: bool) -> tuple[SortKey, ...]:
    """``_sort=status,-date``: unknown keys are dropped (400 under strict handling)."""
    keys: list[SortKey] = []
    items = raw.split(",")
    if len(items) > MAX_SORT_KEYS:
        raise InvalidRequest(f"_sort takes at most {MAX_SORT_KEYS} keys", ["_sort"])
    for item in items:
        item = item.strip()
        if not item:
            continue
        descending = item.startswith("-")
        code = item.lstrip("-")
        param = registry.get(resource_type, code)
        usable = param is not None and (
            code in ("_id", "_lastUpdated") or (param.type in SORTABLE_TYPES and supported(param))
        )
        if not usable:
            if strict:
                raise InvalidRequest(f"cannot sort {resource_type} by '{code}'", ["_sort"])
            continue
        assert param is not None
        keys.append(SortKey(param, descending))
    return tuple(keys)


def resolve_compartment(resource_type: str, compartment: tuple[str, str], registry: SearchRegistry) -> Compartment:
    compartment_type, compartment_id = compartment
    members = registry.compartments.get(compartment_type)
    if members is None:
        raise InvalidRequest(f"'{compartment_type}' is not a compartment")
    codes = members.get(resource_type, ())
    params = tuple(
        p for code in codes if (p := registry.get(resource_type, code)) is not None and p.type == "reference"
    )
    if not params:
        raise InvalidRequest(f"{resource_type} is not in the {compartment_type} compartment")
    return Compartment(compartment_type, compartment_id, params)
