"""The error tree: stable, unique codes."""

from __future__ import annotations

from authgate import errors


def all_error_classes() -> list[type[errors.AuthgateError]]:
    found: list[type[errors.AuthgateError]] = []
    stack: list[type[errors.AuthgateError]] = [errors.AuthgateError]
    while stack:
        cls = stack.pop()
        found.append(cls)
        stack.extend(cls.__subclasses__())
    return found


def test_every_error_has_a_unique_code() -> None:
    codes = [cls.code for cls in all_error_classes()]
    assert len(codes) == len(set(codes))


def test_every_error_is_drawn_in_the_docstring() -> None:
    doc = errors.__doc__ or ""
    for cls in all_error_classes():
        assert cls.__name__ in doc
        assert cls.code in doc or cls is errors.AuthgateError


def test_reason_codes_are_lower_snake_case() -> None:
    for reason in errors.Reason:
        assert reason.value == reason.name.lower()


def test_missing_extra_names_the_extra() -> None:
    error = errors.MissingExtra("redis", "redis")
    assert "authgate[redis]" in str(error)
