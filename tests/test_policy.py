"""Route matching, pattern validation, reachability and path normalisation."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authgate.config import Route, Settings
from authgate.errors import ConfigError, Reason
from authgate.policy import (
    Policy,
    build_policy,
    check_access,
    compile_route,
    covers,
    normalize_path,
)


def numbered(segments: list[str]) -> list[str]:
    """Give each ``{p}`` its own name: a pattern may not repeat a parameter."""
    return [f"{{p{i}}}" if s == "{p}" else s for i, s in enumerate(segments)]


def policy_of(*routes: Route) -> Policy:
    return build_policy(Settings(routes=routes))


def test_exact_param_and_prefix_patterns() -> None:
    p = policy_of(
        Route(name="models", path="/v1/models", methods=("GET",)),
        Route(name="task", path="/v1/agents/{agent}/tasks/{task}"),
        Route(name="files", path="/v1/files/*"),
        Route(name="root", path="/"),
    )
    assert p.match("GET", "/v1/models").name == "models"  # type: ignore[union-attr]
    assert p.match("POST", "/v1/models") is None
    assert p.match("GET", "/v1/models/") is None
    task = p.match("DELETE", "/v1/agents/a1/tasks/7")
    assert task is not None
    assert task.name == "task"
    assert p.params(task, "/v1/agents/a1/tasks/7") == {"agent": "a1", "task": "7"}
    assert p.match("GET", "/v1/agents//tasks/7") is None
    assert p.match("PUT", "/v1/files/").name == "files"  # type: ignore[union-attr]
    assert p.match("PUT", "/v1/files/a/b/c").name == "files"  # type: ignore[union-attr]
    assert p.match("PUT", "/v1/files") is None
    assert p.match("GET", "/").name == "root"  # type: ignore[union-attr]


def test_first_match_wins_across_methods() -> None:
    p = policy_of(
        Route(name="read", path="/v1/*", methods=("GET",), min_tier=0),
        Route(name="any", path="/v1/*", min_tier=3),
    )
    assert p.match("GET", "/v1/x").name == "read"  # type: ignore[union-attr]
    assert p.match("POST", "/v1/x").name == "any"  # type: ignore[union-attr]
    assert p.match("BREW", "/v1/x").name == "any"  # type: ignore[union-attr]


def test_literal_segments_are_not_regex() -> None:
    p = policy_of(Route(name="dot", path="/v1/a.b"))
    assert p.match("GET", "/v1/a.b") is not None
    assert p.match("GET", "/v1/aXb") is None


@given(st.lists(st.sampled_from(["a", "b", "{p}", "c.d"]), min_size=1, max_size=4), st.data())
def test_matching_agrees_with_a_linear_scan(segments: list[str], data: st.DataObject) -> None:
    routes = []
    for i in range(data.draw(st.integers(1, 5))):
        segs = data.draw(st.lists(st.sampled_from(["a", "b", "{p}"]), min_size=1, max_size=3))
        prefix = data.draw(st.booleans())
        methods = data.draw(st.sampled_from([("*",), ("GET",), ("GET", "POST")]))
        path = "/" + "/".join(numbered(segs)) + ("/*" if prefix else "")
        routes.append(Route(name=f"r{i}", path=path, methods=methods))
    p = policy_of(*routes)
    path = "/" + "/".join(s.replace("{p}", "zz") for s in segments)
    method = data.draw(st.sampled_from(["GET", "POST", "PUT"]))
    expected = next(
        (
            r
            for r in p.routes
            if (r.methods is None or method in r.methods) and r.regex.fullmatch(path)
        ),
        None,
    )
    assert expected == p.match(method, path)


@pytest.mark.parametrize(
    "path",
    ["v1/x", "/v1//x", "/v1/*/x", "/v1/x*", "/v1/{a}/{a}", "/v1/{bad-name}", "/v1/../x", "/a b"],
)
def test_invalid_patterns_fail_at_load_naming_the_rule(path: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("routes[0].path")):
        compile_route(0, Route(name="bad", path=path))


def test_unreachable_rules_are_reported() -> None:
    p = policy_of(
        Route(name="all", path="/v1/*"),
        Route(name="models", path="/v1/models", methods=("GET",)),
        Route(name="other", path="/v2/{x}", methods=("GET",)),
        Route(name="other-post", path="/v2/{x}", methods=("POST",)),
    )
    assert len(p.warnings) == 1
    assert "'models'" in p.warnings[0]
    assert "'all'" in p.warnings[0]


def test_default_routes_have_no_unreachable_rule() -> None:
    assert build_policy(Settings()).warnings == []


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("/v1/*", "/v1/x/*", True),
        ("/v1/*", "/v1/*", True),
        ("/v1/x/*", "/v1/*", False),
        ("/v1/{p}", "/v1/x", True),
        ("/v1/x", "/v1/{p}", False),
        ("/v1/{p}", "/v1/*", False),
        ("/v1/*", "/v1", False),
        ("/*", "/", True),
    ],
)
def test_covers(a: str, b: str, expected: bool) -> None:
    assert expected == covers(
        compile_route(0, Route(name="a", path=a)), compile_route(1, Route(name="b", path=b))
    )


@given(
    st.lists(st.sampled_from(["a", "b", "{p}"]), max_size=3),
    st.booleans(),
    st.lists(st.sampled_from(["a", "b", "{p}"]), max_size=3),
    st.booleans(),
    st.lists(st.sampled_from(["a", "b", "c", "x"]), max_size=5),
)
def test_covers_is_sound(
    a: list[str], a_prefix: bool, b: list[str], b_prefix: bool, probe: list[str]
) -> None:
    """When covers(A, B), every path that B matches, A matches too."""

    def make(segs: list[str], prefix: bool, name: str) -> Route:
        body = "/".join(numbered(segs))
        if prefix:
            return Route(name=name, path=f"/{body}/*" if body else "/*")
        return Route(name=name, path=f"/{body}" if body else "/")

    ra, rb = compile_route(0, make(a, a_prefix, "a")), compile_route(1, make(b, b_prefix, "b"))
    path = "/" + "/".join(probe)
    if covers(ra, rb) and rb.regex.fullmatch(path):
        assert ra.regex.fullmatch(path)


def test_check_access() -> None:
    route = compile_route(0, Route(name="r", path="/x", min_tier=2, scopes=("a", "b")))
    assert check_access(route, 1, frozenset({"a", "b"})) == Reason.INSUFFICIENT_TIER
    assert check_access(route, 2, frozenset({"a"})) == Reason.MISSING_SCOPE
    assert check_access(route, 5, frozenset({"a", "b", "c"})) == Reason.OK


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/v1/models", "/v1/models"),
        ("/v1/models?x=1", "/v1/models"),
        ("/v1/models#frag", "/v1/models"),
        ("/v1//models", "/v1/models"),
        ("/v1/./models", "/v1/models"),
        ("/v1/public/../admin", "/v1/admin"),
        ("/v1/%61dmin", "/v1/admin"),
        ("/v1/%2e%2e/admin", "/admin"),
        ("/v1/a%20b", "/v1/a%20b"),
        ("/v1/x/..", "/v1/"),
        ("/..", None),
        ("/v1/a%2fb", None),
        ("/v1/a%5Cb", None),
        ("/v1/a\\b", None),
        ("/v1/%zz", None),
        ("/v1/%0a", None),
        ("v1/models", None),
        ("*", None),
        ("/v1/\x00", None),
        ("/v1/é", None),
    ],
)
def test_normalize_path(target: str, expected: str | None) -> None:
    assert expected == normalize_path(target)


@given(st.text(max_size=60))
def test_normalized_paths_are_fixed_points_without_dot_segments(target: str) -> None:
    path = normalize_path(target)
    if path is not None:
        assert path.startswith("/")
        assert "//" not in path
        assert "/./" not in path + "/"
        assert "/../" not in path + "/"
        assert path == normalize_path(path)
