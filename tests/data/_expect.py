"""Assertion helper shared by the data tests: a DataError with a code and named things."""

from __future__ import annotations

import pytest

from alphaloop.errors import DataError


def expect(code: str, fn: object, *needles: str) -> DataError:
    """``fn()`` raises DataError ``code`` whose message contains every needle."""
    with pytest.raises(DataError) as info:
        fn()  # type: ignore[operator]
    assert info.value.code == code, str(info.value)
    for needle in needles:
        assert needle in info.value.message, f"{needle!r} not in {info.value.message!r}"
    return info.value
