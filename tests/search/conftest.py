"""Fixtures of the search tests: the official registry and the two SQL dialects."""

from __future__ import annotations

import pytest
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from app.main import served_resource_types
from app.search.registry import SearchRegistry, load_registry

DIALECTS = {"postgresql": postgresql.dialect(), "sqlite": sqlite.dialect()}


@pytest.fixture(scope="module")
def registry() -> SearchRegistry:
    return load_registry(served_resource_types())


@pytest.fixture(params=sorted(DIALECTS))
def dialect(request: pytest.FixtureRequest) -> Dialect:
    """Each compiled-SQL test runs once per backend's dialect, without a database."""
    return DIALECTS[request.param]
