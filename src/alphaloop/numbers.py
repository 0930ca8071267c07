"""Small number helpers every floor may use (floor 1, beside ``errors`` and ``fsutil``)."""

from __future__ import annotations

import math
from typing import Any


def finite(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing, not a number or not finite
    (what JSON records and reports keep for "undefined")."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
