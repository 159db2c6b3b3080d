"""The units of OME-NGFF axes, as factors of the SI unit of their quantity.

Fields of one plate may state their positions in different units (one converter writes
micrometer, another nanometer); a plate-wide coordinate converts them exactly instead of
putting 100000 nanometres at 100000 micrometres.
"""

from __future__ import annotations

__all__ = ["QUANTITY", "conversion"]

_PREFIX = {"yocto": 1e-24, "zepto": 1e-21, "atto": 1e-18, "femto": 1e-15, "pico": 1e-12,
           "nano": 1e-9, "micro": 1e-6, "milli": 1e-3, "centi": 1e-2, "deci": 1e-1, "": 1.0,
           "deca": 1e1, "hecto": 1e2, "kilo": 1e3, "mega": 1e6, "giga": 1e9, "tera": 1e12,
           "peta": 1e15, "exa": 1e18, "zetta": 1e21, "yotta": 1e24}

#: unit → (quantity, factor of the quantity's SI unit)
QUANTITY: dict[str, tuple[str, float]] = {
    **{f"{p}meter": ("length", f) for p, f in _PREFIX.items() if p != "deca"},
    **{f"{p}second": ("time", f) for p, f in _PREFIX.items() if p != "deca"},
    "angstrom": ("length", 1e-10), "inch": ("length", 0.0254), "foot": ("length", 0.3048),
    "yard": ("length", 0.9144), "mile": ("length", 1609.344),
    "parsec": ("length", 3.0856775814913673e16),
    "minute": ("time", 60.0), "hour": ("time", 3600.0), "day": ("time", 86400.0),
}


def conversion(unit: str | None, to: str | None) -> float | None:
    """The factor that turns values in ``unit`` into values in ``to``; 1.0 for the same unit
    (also two absent ones), None where no exact conversion exists (an absent or unknown
    unit beside another, different quantities)."""
    if unit == to:
        return 1.0
    a, b = QUANTITY.get(unit or ""), QUANTITY.get(to or "")
    if a is None or b is None or a[0] != b[0]:
        return None
    return a[1] / b[1]
