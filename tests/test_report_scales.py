"""Axes, units and words of the report (report/scales.py): pure functions, known answers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distributed_something.report.scales import (
    HOUR,
    MINUTE,
    SECOND,
    format_duration,
    format_rate,
    format_usd,
    nice_number,
    nice_ticks,
    plural,
    time_unit,
)


def labels(low: float, high: float, **kw: bool) -> list[str]:
    axis = nice_ticks(low, high, **kw)
    return [axis.label(v) for v in axis.values]


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0, 0.1, ["0", "0.02", "0.04", "0.06", "0.08", "0.10"]),
        (0, 1.5, ["0", "0.5", "1.0", "1.5"]),
        (0, 7, ["0", "2", "4", "6", "8"]),
        (0, 1234, ["0", "500", "1000", "1500"]),
        # 3600-7200 s reads in minutes (time_unit): 60-120 min.
        (60, 120, ["60", "80", "100", "120"]),
        # Durations of 1.50-1.55 s: the histogram's ticks once all read "1.5s".
        (1.50, 1.55, ["1.50", "1.52", "1.54", "1.56"]),
    ],
)
def test_known_ranges_get_known_ticks(low: float, high: float, expected: list[str]) -> None:
    assert labels(low, high) == expected


def test_an_hour_to_two_reads_in_minutes() -> None:
    unit = time_unit(7200)
    assert unit is MINUTE
    assert labels(3600 / unit.seconds, 7200 / unit.seconds) == ["60", "80", "100", "120"]


def test_count_axes_step_by_whole_numbers() -> None:
    assert labels(0, 1, integer=True) == ["0", "1"]
    assert labels(0, 3, integer=True) == ["0", "1", "2", "3"]
    assert labels(0, 20_000, integer=True) == ["0", "5000", "10000", "15000", "20000"]


def test_empty_ranges_still_get_an_axis() -> None:
    assert labels(0, 0) == ["0", "0.2", "0.4", "0.6", "0.8", "1.0"]
    axis = nice_ticks(5, 5)
    assert axis.low <= 5 < axis.high


def test_nice_number_rounds_and_covers() -> None:
    assert nice_number(0.025, round_=True) == pytest.approx(0.02)
    assert nice_number(1234, round_=False) == 2000
    assert nice_number(7, round_=False) == 10
    assert nice_number(7, round_=True) == 10
    assert nice_number(6.9, round_=True) == 5
    with pytest.raises(ValueError, match="positive"):
        nice_number(0, round_=True)


@given(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.floats(min_value=1e-6, max_value=1e6, allow_nan=False),
)
def test_ticks_cover_the_range_with_1_2_5_steps(low: float, width: float) -> None:
    high = low + width
    axis = nice_ticks(low, high)
    slack = 1e-6 * axis.step  # a value within a millionth of a step of a tick is on it
    assert axis.low <= low + slack and axis.high >= high - slack
    assert 2 <= len(axis.values) <= 11
    mantissa = axis.step / 10 ** math.floor(math.log10(axis.step))
    assert round(mantissa, 6) in (1.0, 2.0, 5.0)
    # Every label differs from its neighbours: no axis reads "1.5 1.5 1.5".
    texts = [axis.label(v) for v in axis.values]
    assert len(set(texts)) == len(texts)


def test_time_units_fit_the_span() -> None:
    assert time_unit(3.2) is SECOND
    assert time_unit(179) is SECOND
    assert time_unit(180) is MINUTE
    assert time_unit(3 * 3600 - 1) is MINUTE
    assert time_unit(3 * 3600) is HOUR


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (-2, "0 s"),
        (0.045, "45 ms"),
        (3.2, "3.2 s"),
        (42.4, "42 s"),
        (59.6, "1 min"),
        (90, "1 min 30 s"),
        (3725, "1 h 02 min"),
        (26 * 3600, "26 h 00 min"),
    ],
)
def test_durations_read_in_the_unit_that_fits(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_rates_pick_a_unit_that_gives_at_least_one() -> None:
    assert format_rate(6, 3.2) == "1.88 tasks/s"
    assert format_rate(3, 300) == "36 tasks/h"
    assert format_rate(30, 60) == "30 tasks/min"
    assert format_rate(0, 10) == "n/a"


def test_plurals_and_money() -> None:
    assert plural(1, "task") == "1 task"
    assert plural(0, "task") == "0 tasks"
    assert plural(6, "task") == "6 tasks"
    assert plural(2, "entry", "entries") == "2 entries"
    assert format_usd(12.345) == "$12.35"
    assert format_usd(0.0042) == "$0.0042"
    assert format_usd(0) == "$0.00"
