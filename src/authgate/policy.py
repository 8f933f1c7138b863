"""Tiers and route rules, compiled once, matched per request; pure functions.

A route's ``path`` is exact (``/v1/models``), has ``{param}`` segments that match one
non-empty segment (``/v1/agents/{id}/tasks``), or ends in ``/*`` to match everything under a
prefix (``/v1/files/*`` matches ``/v1/files/`` and ``/v1/files/a/b``, not ``/v1/files``).
The first rule whose methods and path match wins; no match is a deny (``no_route``).

Matching compiles all rules that accept a method into one regular expression whose
alternatives keep the rules' order, so a request costs one regex match whatever the number
of rules. At load, rules that an earlier rule covers completely are reported as unreachable.

Paths are normalised before matching (:func:`normalize_path`): dot segments and repeated
slashes would let ``/v1/public/../admin`` slip past a prefix rule, and an encoded slash or
backslash is refused outright.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from authgate.config import Route, Settings, Tier
from authgate.errors import ConfigError, Reason

ANY = "*"
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,31})\}")
_LITERAL = re.compile(r"[A-Za-z0-9._~!$&'()+,;=:@%-]*")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
# A path made only of segments that need no normalisation (no '%', '\\', '//', and no
# segment starting with '.'), optionally followed by a query or fragment: one regex call.
_NORMAL = re.compile(
    r"((?:/[A-Za-z0-9_~!$&'()*+,;=:@-][A-Za-z0-9._~!$&'()*+,;=:@-]*)*/?)(?:[?#].*)?", re.DOTALL
)
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class Param:
    """A ``{name}`` segment."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"{{{self.name}}}"


Segment = str | Param


class CompiledRoute(NamedTuple):
    """A validated route rule with its parsed pattern."""

    position: int
    name: str
    methods: frozenset[str] | None  # None: any method
    path: str
    segments: tuple[Segment, ...]
    prefix: bool
    min_tier: int
    scopes: frozenset[str]
    cost: int
    upstream: str
    per_route: bool
    regex: re.Pattern[str]


class Policy:
    """Tiers by level and the compiled route table."""

    def __init__(self, tiers: Sequence[Tier], routes: Sequence[CompiledRoute]) -> None:
        self.tiers: tuple[Tier, ...] = tuple(sorted(tiers, key=lambda t: t.level))
        self.routes = tuple(routes)
        self.warnings = unreachable_rules(self.routes)
        self._any = _combine([r for r in self.routes if r.methods is None])
        self._by_method: dict[str, tuple[re.Pattern[str], tuple[CompiledRoute, ...]]] = {}
        for method in sorted({m for r in self.routes if r.methods for m in r.methods}):
            self._by_method[method] = _combine(
                [r for r in self.routes if r.methods is None or method in r.methods]
            )

    def match(self, method: str, path: str) -> CompiledRoute | None:
        """The first rule that accepts ``method`` and the normalised ``path``."""
        regex, routes = self._by_method.get(method, self._any)
        found = regex.fullmatch(path)
        if found is None:
            return None
        return routes[found.lastindex - 1] if found.lastindex else None

    def params(self, route: CompiledRoute, path: str) -> dict[str, str]:
        """The ``{param}`` values of a path that ``route`` matched."""
        found = route.regex.fullmatch(path)
        return found.groupdict() if found else {}


def check_access(route: CompiledRoute, tier: int, scopes: frozenset[str]) -> Reason:
    """OK when ``tier`` and ``scopes`` satisfy the route, else the reason they do not."""
    if tier < route.min_tier:
        return Reason.INSUFFICIENT_TIER
    if route.scopes and not route.scopes <= scopes:
        return Reason.MISSING_SCOPE
    return Reason.OK


def build_policy(settings: Settings) -> Policy:
    """Compile the settings' tiers and routes; ConfigError names the bad rule."""
    return Policy(settings.tiers, [compile_route(i, r) for i, r in enumerate(settings.routes)])


def compile_route(index: int, route: Route) -> CompiledRoute:
    """Parse and validate one route rule."""
    where = f"routes[{index}].path"
    path = route.path
    if not path.startswith("/"):
        raise ConfigError(f"invalid setting '{where}': must start with '/' (got {path!r})")
    prefix = path == "/*" or path.endswith("/*")
    body = path[1:-2] if prefix and path != "/*" else ("" if prefix else path[1:])
    segments: list[Segment] = []
    names: set[str] = set()
    parts = body.split("/") if body or not prefix else []
    for i, part in enumerate(parts):
        param = _PARAM.fullmatch(part)
        if param:
            if param[1] in names:
                raise ConfigError(f"invalid setting '{where}': repeated {{{param[1]}}}")
            names.add(param[1])
            segments.append(Param(param[1]))
        elif part == "" and not (path == "/" and i == 0):
            raise ConfigError(f"invalid setting '{where}': empty segment in {path!r}")
        elif "*" in part or "{" in part or "}" in part or not _LITERAL.fullmatch(part):
            raise ConfigError(
                f"invalid setting '{where}': bad segment {part!r} "
                "('*' only as a final '/*'; params look like {name})"
            )
        elif normalize_path("/" + part) != "/" + part or part in (".", ".."):
            raise ConfigError(f"invalid setting '{where}': segment {part!r} is not normalised")
        else:
            segments.append(part)
    methods = None if ANY in route.methods else frozenset(route.methods)
    return CompiledRoute(
        position=index,
        name=route.name,
        methods=methods,
        path=path,
        segments=tuple(segments),
        prefix=prefix,
        min_tier=route.min_tier,
        scopes=frozenset(route.scopes),
        cost=route.cost,
        upstream=route.upstream,
        per_route=route.limit_by == "route",
        regex=re.compile(_pattern(segments, prefix, capture=True)),
    )


def _pattern(segments: Sequence[Segment], prefix: bool, *, capture: bool) -> str:
    out = ""
    for seg in segments:
        if isinstance(seg, Param):
            out += f"/(?P<{seg.name}>[^/]+)" if capture else "/[^/]+"
        else:
            out += "/" + re.escape(seg)
    return out + "/.*" if prefix else out


def _combine(routes: Sequence[CompiledRoute]) -> tuple[re.Pattern[str], tuple[CompiledRoute, ...]]:
    if not routes:
        return re.compile(r"(?!)"), ()
    alternatives = "|".join(f"({_pattern(r.segments, r.prefix, capture=False)})" for r in routes)
    return re.compile(f"(?:{alternatives})", re.DOTALL), tuple(routes)


# -- reachability ------------------------------------------------------------------------


def _segment_covers(a: Segment, b: Segment) -> bool:
    if isinstance(a, Param):
        return isinstance(b, Param) or b != ""
    return not isinstance(b, Param) and a == b


def covers(a: CompiledRoute, b: CompiledRoute) -> bool:
    """True when every request that ``b`` matches is also matched by ``a``."""
    if a.methods is not None and (b.methods is None or not b.methods <= a.methods):
        return False
    if not a.prefix:
        if b.prefix or len(a.segments) != len(b.segments):
            return False
    else:
        need = len(a.segments) + (0 if b.prefix else 1)
        if len(b.segments) < need:
            return False
    return all(_segment_covers(x, y) for x, y in zip(a.segments, b.segments, strict=False))


def unreachable_rules(routes: Sequence[CompiledRoute]) -> list[str]:
    """Warnings for rules that an earlier rule shadows completely."""
    warnings = []
    for i, later in enumerate(routes):
        for earlier in routes[:i]:
            if covers(earlier, later):
                warnings.append(
                    f"routes[{later.position}] '{later.name}' ({later.path}) is unreachable: "
                    f"routes[{earlier.position}] '{earlier.name}' ({earlier.path}) matches "
                    "everything it matches"
                )
                break
    return warnings


# -- path normalisation ------------------------------------------------------------------


def normalize_path(target: str) -> str | None:
    """The path of a request target with query and fragment removed, unreserved
    percent-escapes decoded, repeated slashes merged and dot segments resolved.

    None when the target cannot be a safe path: not starting with '/', control characters,
    bad or encoded '/' or '\\' escapes, or dot segments that climb above the root.
    """
    fast = _NORMAL.fullmatch(target)
    if fast is not None and fast[1]:
        return fast[1]
    cut = len(target)
    for sep in "?#":
        pos = target.find(sep)
        if 0 <= pos < cut:
            cut = pos
    path = target[:cut]
    if not path.startswith("/"):
        return None
    if not path.isascii() or not path.isprintable() or "\\" in path:
        return None
    if "%" in path:
        decoded = _decode_unreserved(path)
        if decoded is None:
            return None
        path = decoded
    out: list[str] = []
    parts = path.split("/")[1:]
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "..":
            if not out:
                return None
            out.pop()
            if last:
                out.append("")
        elif part == ".":
            if last:
                out.append("")
        elif part == "" and not last:
            continue
        else:
            out.append(part)
    return "/" + "/".join(out)


def _decode_unreserved(path: str) -> str | None:
    pieces = path.split("%")
    out = [pieces[0]]
    for piece in pieces[1:]:
        if len(piece) < 2 or not _PCT.match("%" + piece[:2]):
            return None
        char = chr(int(piece[:2], 16))
        if char in "/\\" or ord(char) < 0x20 or ord(char) == 0x7F:
            return None
        if char in _UNRESERVED:
            out.append(char + piece[2:])
        else:
            out.append("%" + piece[:2].upper() + piece[2:])
    return "".join(out)
