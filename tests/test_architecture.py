"""The layering rules of DESIGN.md §2 that import-linter cannot express: each third-party
library lives in one place, and the package's public face is deliberate."""

from __future__ import annotations

import ast
from pathlib import Path

import authgate

SRC = Path(authgate.__file__).parent

# library -> the modules allowed to import it (a trailing "." allows the whole package)
CONFINED = {
    "uvloop": ("authgate.dataplane.",),
    "httptools": ("authgate.dataplane.",),
    "uvicorn": ("authgate.control.",),
    "starlette": ("authgate.control.",),
    "redis": ("authgate.ratelimit.redis", "authgate.handoff_redis"),
    "asyncpg": ("authgate.identity.postgres",),
    "prometheus_client": ("authgate.metrics",),
    "jwt": ("authgate.tokens",),
    "cryptography": ("authgate.tokens", "authgate.audit.note", "authgate.sealing"),
    "argon2": ("authgate.identity.passwords",),
    "click": ("authgate.cli.",),
    "rich": ("authgate.cli.",),
    "numpy": ("authgate.bench.",),
    "hdrh": ("authgate.bench.",),
    "scipy": ("authgate.bench.",),
    "zstandard": ("authgate.dataplane.cache",),
    "brotli": ("authgate.dataplane.compress",),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_third_party_libraries_live_in_one_place() -> None:
    violations = []
    for path in SRC.rglob("*.py"):
        module = module_name(path)
        for library in imports(path) & CONFINED.keys():
            allowed = CONFINED[library]
            if not any(module in (a, a.rstrip(".")) or module.startswith(a) for a in allowed):
                violations.append(f"{module} imports {library}")
    assert violations == []


def test_public_names_are_sorted_and_importable() -> None:
    assert sorted(authgate.__all__) == authgate.__all__
    for name in authgate.__all__:
        assert getattr(authgate, name) is not None


def test_modules_stay_small() -> None:
    sizes = {module_name(p): len(p.read_text().splitlines()) for p in SRC.rglob("*.py")}
    assert {m: n for m, n in sizes.items() if n > 450} == {}
