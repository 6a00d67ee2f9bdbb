"""What a run's task time is priced at: the report's `Pricing`, with the spot prices the
run's machines actually had where the backend can read them (AWS: report/cost.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from distributed_something.config.model import Config
from distributed_something.errors import BackendError
from distributed_something.interfaces.backend import Backend
from distributed_something.records import RunRecords
from distributed_something.report.context import ReportContext, report_context
from distributed_something.report.cost import (
    Pricing,
    SpotHistory,
    pricing_for,
    with_price_note,
    with_spot_prices,
)
from distributed_something.state import RunState


def run_pricing(
    config: Config,
    backend: Backend,
    records: RunRecords,
    state: RunState,
    now: Callable[[], float] = time.time,
) -> Pricing | None:
    """The pricing of the run's attempts: None where no price is known (`pricing_for`);
    on a backend with a spot market, each worker that recorded its machine
    (`RunRecords.machines`) is priced at that machine's spot prices over the run, read
    once for every (instance type, zone) used. When they cannot be read (no permission,
    a run older than the history), the configured price stays and the basis says why."""
    pricing = pricing_for(config, backend.name)
    if pricing is None or backend.spot_prices is None:
        return pricing
    machines = {
        worker: (m.instance_type, m.availability_zone)
        for worker, m in records.machines().items()
        if m.instance_type and m.availability_zone
    }
    if not machines:
        return with_price_note(pricing, "no worker recorded its machine: no spot prices read")
    end = state.finished_at if state.finished_at is not None else now()
    try:
        steps = backend.spot_prices(set(machines.values()), state.created_at, end)
    except BackendError as exc:
        return with_price_note(pricing, f"spot prices not used: {exc}")
    return with_spot_prices(pricing, machines, {m: SpotHistory(s) for m, s in steps.items()})


def priced_report_context(
    config: Config, backend: Backend, records: RunRecords, state: RunState
) -> ReportContext:
    """`report_context` with `run_pricing`'s pricing."""
    context = report_context(config, backend.name, backend.location)
    if context.pricing is None:
        return context
    return replace(context, pricing=run_pricing(config, backend, records, state))


__all__ = ["priced_report_context", "run_pricing"]
