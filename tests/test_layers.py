"""The layering of the code, read from its imports: HTTP -> subscriptions -> interactions -> search ->
storage/validation.

A module may import its own package and any package of a lower layer, never a higher one, so a
route never builds SQL, storage never learns of search or HTTP, and capability/ builds the
CapabilityStatement without the HTTP layer (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {
    "app": 0,  # the package itself: __version__
    "app.errors": 0,
    "app.config": 0,
    "app.fhirjson": 1,
    "app.storage": 2,
    "app.validation": 2,
    "app.search": 3,
    "app.smart": 3,  # the authorization server: scopes, clients, keys, tokens (over storage)
    "app.interactions": 4,
    "app.subscriptions": 5,  # the outbox hook and delivery: server-side writes go through interactions
    "app.api": 6,
    "app.main": 7,
    "app.cli": 9,  # the command line: serve, migrate, and the admin commands below it
    "app.admin_cli": 7,
    "app.delivery_worker": 8,  # fhir-server deliver: the app's Subscriptions, without HTTP
    "app.delivery_supervisor": 1,  # keeps fhir-server deliver running beside serve (subprocess only)
}


def layer_of(module: str) -> tuple[str, int]:
    """The package (``app.search``) or top module (``app.errors``) of a module, and its layer."""
    parts = module.split(".")
    for length in (2, 1):
        name = ".".join(parts[:length])
        if name in LAYERS:
            return name, LAYERS[name]
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def imports(path: Path) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "app":  # from app import fhirjson
                found += [f"app.{alias.name}" for alias in node.names]
            else:
                found.append(node.module)
    return [name for name in found if name == "app" or name.startswith(("app.", "capability"))]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def test_app_imports_only_downwards() -> None:
    wrong = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        source = module_name(path)
        package, level = layer_of(source)
        for target in imports(path):
            if target.startswith("capability"):
                if package not in ("app.main",):
                    wrong.append(f"{source} -> {target}")
                continue
            target_package, target_level = layer_of(target)
            if target_package != package and target_level >= level:
                wrong.append(f"{source} -> {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_capability_does_not_import_the_http_layer() -> None:
    for path in sorted((ROOT / "capability").glob("*.py")):
        for target in imports(path):
            if target.startswith("app"):
                assert layer_of(target)[1] < LAYERS["app.api"], f"{module_name(path)} -> {target}"


SQL_STARTS = ("SELECT ", "INSERT ", "UPDATE ", "DELETE ", "WITH ", "CREATE ", "ALTER ", "DROP ")


def _sources(package: str) -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(), str(path))) for path in sorted((ROOT / package).rglob("*.py"))]


def test_no_interaction_branches_on_the_database_backend() -> None:
    """The backend choice lives in storage (the write gate, ``Database``): interactions never ask it."""
    offenders = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path, tree in _sources("app/interactions") + _sources("app/api")
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "dialect"
    ]
    assert offenders == []


def test_sql_is_built_from_sqlalchemy_constructs() -> None:
    """No ``text()``, ``exec_driver_sql`` or SQL in string literals in app/ (alembic and bench may)."""
    offenders = []
    for path, tree in _sources("app"):
        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
                offenders += [where for alias in node.names if alias.name in ("text", "literal_column")]
            elif isinstance(node, ast.Attribute) and node.attr == "exec_driver_sql":
                # SQLite's BEGIN / BEGIN IMMEDIATE (SQLAlchemy's pysqlite transaction recipe): no Core construct
                if path != ROOT / "app/storage/database.py":
                    offenders.append(where)
            elif isinstance(node, ast.Constant) and str(node.value).lstrip("( ").startswith(SQL_STARTS):
                offenders.append(where)
    assert offenders == []
