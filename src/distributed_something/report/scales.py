"""Axes and units for the report's charts and texts: nice tick values, duration units, plurals.

Pure functions, no I/O. Ticks follow Heckbert's "nice numbers" (Graphics Gems, 1990): a tick
step is 1, 2 or 5 times a power of ten, and the axis is widened to whole steps ("loose"
labels), so every tick sits on a round value and the data fits inside the first and last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Ticks an axis aims for (Heckbert's ``ntick``); an axis gets between about 3 and 8.
TARGET_TICKS = 5


def nice_number(value: float, *, round_: bool) -> float:
    """A number of the form 1, 2 or 5 (or 10) × 10^k close to ``value`` (> 0).

    With ``round_`` the nearest such number (1 below 1.5, 2 below 3, 5 below 7, else 10);
    without it the smallest such number ≥ ``value`` (a range that must be covered)."""
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"nice_number needs a finite positive value, not {value!r}")
    exponent = math.floor(math.log10(value))
    fraction = value / 10**exponent
    if round_:
        nice = 1 if fraction < 1.5 else 2 if fraction < 3 else 5 if fraction < 7 else 10
    else:
        nice = 1 if fraction <= 1 else 2 if fraction <= 2 else 5 if fraction <= 5 else 10
    return nice * 10.0**exponent


@dataclass(frozen=True)
class Ticks:
    """An axis: tick ``values`` from ``low`` to ``high`` (the axis ends, both ticks) every
    ``step``, printed with ``decimals`` digits after the point."""

    values: tuple[float, ...]
    step: float
    decimals: int

    @property
    def low(self) -> float:
        return self.values[0]

    @property
    def high(self) -> float:
        return self.values[-1]

    def label(self, value: float) -> str:
        """``value`` as its tick reads: ``0.02``, ``1.5``, ``1500`` (no ``-0``)."""
        text = f"{value:.{self.decimals}f}"
        return "0" if float(text) == 0 else text


def nice_ticks(
    low: float, high: float, *, target: int = TARGET_TICKS, integer: bool = False
) -> Ticks:
    """Loose nice ticks covering ``[low, high]`` (Heckbert): the step is
    ``nice_number(nice_number(high - low) / (target - 1), round_=True)``, the axis runs from
    ``floor(low / step)`` to ``ceil(high / step)`` steps. ``integer`` (counts) keeps the step
    ≥ 1. An empty range (``low == high``) gets an axis of one step above ``low`` (or ``[0, 1]``
    at 0). Each value is a whole multiple of the step, computed without drift, so 0.1 + 0.2
    never prints as 0.30000000000000004.
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"nice_ticks needs finite bounds, not {low!r}..{high!r}")
    if high < low:
        low, high = high, low
    if high == low:
        if low == 0:
            high = 1.0
        else:
            high = low + nice_number(abs(low), round_=False) / 10 * max(target - 1, 1)
    span = nice_number(high - low, round_=False)
    step = nice_number(span / max(target - 1, 1), round_=True)
    if integer:
        step = max(step, 1.0)
    first = math.floor(low / step + 1e-9)
    last = math.ceil(high / step - 1e-9)
    decimals = max(-math.floor(math.log10(step)), 0)
    values = tuple(round(k * step, decimals) for k in range(first, last + 1))
    return Ticks(values, step, decimals)


# --- durations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeUnit:
    """A unit for a time axis or a rate: ``name`` (``s``, ``min``, ``h``) and its seconds."""

    name: str
    seconds: float


SECOND = TimeUnit("s", 1.0)
MINUTE = TimeUnit("min", 60.0)
HOUR = TimeUnit("h", 3600.0)


def time_unit(seconds: float) -> TimeUnit:
    """The unit a time axis reaching ``seconds`` reads best in: seconds up to 3 minutes,
    minutes up to 3 hours, hours beyond (so its ticks are tens, not thousands)."""
    if seconds < 180:
        return SECOND
    if seconds < 3 * 3600:
        return MINUTE
    return HOUR


def format_duration(seconds: float) -> str:
    """A duration for people, in the unit that fits: ``0 s``, ``45 ms``, ``3.2 s``,
    ``42 s``, ``1 min 30 s``, ``2 min``, ``1 h 02 min``, ``26 h 00 min``. Negative
    durations (clock skew between machines) read as ``0 s``."""
    if not math.isfinite(seconds) or seconds <= 0:
        return "0 s"
    if seconds < 0.9995:
        return f"{max(round(seconds * 1000), 1)} ms"
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        minutes, secs = divmod(whole, 60)
        return f"{minutes} min" if secs == 0 else f"{minutes} min {secs:02d} s"
    hours, rest = divmod(round(seconds / 60), 60)
    return f"{hours} h {rest:02d} min"


def format_rate(count: int, seconds: float) -> str:
    """``count`` events over ``seconds`` as a rate per second, minute or hour, whichever
    gives a number of at least 1 (``2.5 tasks/s``, ``12 tasks/min``, ``0.5 tasks/h``)."""
    if seconds <= 0 or count <= 0:
        return "n/a"
    per_second = count / seconds
    for unit in (SECOND, MINUTE, HOUR):
        rate = per_second * unit.seconds
        if rate >= 1 or unit is HOUR:
            return f"{_significant(rate)} tasks/{unit.name}"
    raise AssertionError("unreachable")  # pragma: no cover


def _significant(value: float) -> str:
    """Three significant digits at most, no trailing zeros: 2.5, 12.3, 1234."""
    if value >= 100:
        return f"{value:.0f}"
    text = f"{value:.3g}"
    return text if "e" not in text else f"{value:.4f}".rstrip("0").rstrip(".")


# --- words -----------------------------------------------------------------------------------


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``count`` with its noun: ``1 task``, ``0 tasks``, ``3 attempts`` (``plural_form`` for
    irregular nouns: ``plural(2, "entry", "entries")``)."""
    word = singular if count == 1 else (plural_form or singular + "s")
    return f"{count} {word}"


def format_usd(amount: float) -> str:
    """A cost in dollars, with cents, or with four decimals below a cent (``$0.0042``)."""
    if amount >= 0.01 or amount == 0:
        return f"${amount:,.2f}"
    return f"${amount:.4f}"


__all__ = [
    "HOUR",
    "MINUTE",
    "SECOND",
    "Ticks",
    "TimeUnit",
    "format_duration",
    "format_rate",
    "format_usd",
    "nice_number",
    "nice_ticks",
    "plural",
    "time_unit",
]
