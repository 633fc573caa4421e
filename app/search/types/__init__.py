"""One module per search parameter type, registered in one table (search.html#ptypes).

Each module owns its type's modifiers, value parsing (typed values, the
only 400s about a malformed value), the SQL condition on its index table,
and its ``_sort`` column; ``app.search.request`` parses through
``PARAM_TYPES`` and ``app.search.compiler`` composes their conditions.
``special`` holds the parameters that are columns of ``resources``
(``_id``, ``_lastUpdated``) and the ``:missing`` value every type takes.
"""

from __future__ import annotations

from app.search.types.base import ParamType, SearchValue, ValueContext
from app.search.types.composite import COMPOSITE
from app.search.types.date import DATE
from app.search.types.number import NUMBER
from app.search.types.quantity import QUANTITY
from app.search.types.reference import REFERENCE
from app.search.types.special import COLUMN_PARAMETERS, ID, LAST_UPDATED
from app.search.types.string import STRING
from app.search.types.token import TOKEN
from app.search.types.uri import URI

PARAM_TYPES: dict[str, ParamType] = {
    kind.name: kind for kind in (STRING, TOKEN, REFERENCE, DATE, NUMBER, QUANTITY, URI, COMPOSITE)
}
COLUMN_TYPES: dict[str, ParamType] = {"_id": ID, "_lastUpdated": LAST_UPDATED}


def param_type(code: str, type_name: str) -> ParamType | None:
    """The type that parses and compiles parameter ``code`` of search type ``type_name`` (None: unsupported)."""
    return COLUMN_TYPES.get(code) or PARAM_TYPES.get(type_name)


__all__ = ["COLUMN_PARAMETERS", "COLUMN_TYPES", "PARAM_TYPES", "ParamType", "SearchValue", "ValueContext", "param_type"]
