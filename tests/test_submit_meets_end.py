"""A submit meeting the end of its run (`ds submit` in one terminal as `ds run` finishes in
another): its tasks are either watched to their end by that run, or not sent at all and the
submit says so — never sent to a run being torn down (they were: the queue was purged
under them, the run ended with them pending, and the submit said it had sent them).

Each side says what it does before it looks at the other: the submit announces its sending
(`sending.announce`) and then reads the state; the monitor saves the run finished and then
looks for a submit under way or tasks without an outcome (`lifecycle._ends_alone`). The
tests put each side's step exactly in the other's window.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import write_project
from distributed_something.backends import open_backend
from distributed_something.errors import InputError
from distributed_something.ledger import read_ledger
from distributed_something.state import load_state
from distributed_something.usecases import lifecycle
from distributed_something.usecases.project import open_project


def set_up(tmp_path: Path) -> tuple[lifecycle.Project, Path]:
    proj = write_project(tmp_path / "proj", argv=["true"], groups=[{"name": "a"}])
    (proj / "more.json").write_text('{"groups": [{"name": "b"}, {"name": "c"}]}')
    project = open_project(proj)
    lifecycle.setup(project)
    return project, proj


def test_a_submit_that_finds_the_run_ended_after_announcing_sends_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, proj = set_up(tmp_path)
    backend = open_backend(project)
    announce = lifecycle.announce_sending

    def monitor_ends_the_run_now(records: lifecycle.RunRecords, part: str) -> None:
        announce(records, part)
        state = load_state(project, backend.storage)
        assert state is not None
        state.finished_at = 1.0  # the monitor said the run is over
        lifecycle.save_state(project, state, backend.storage)

    monkeypatch.setattr(lifecycle, "announce_sending", monitor_ends_the_run_now)
    with pytest.raises(InputError) as raised:
        lifecycle.submit(project, proj / "more.json", show_progress=False)
    assert "nothing was sent" in str(raised.value) and "ds run" in str(raised.value)
    assert backend.queue.counts().visible == 0
    records = lifecycle.records_for(project, backend, load_state(project, backend.storage))
    assert records.sendings() == []  # its announcement is withdrawn
    assert read_ledger(records).tasks == {}  # no manifest: nothing counted pending


def test_a_monitor_that_sees_a_submit_coming_goes_on_watching(tmp_path: Path) -> None:
    project, proj = set_up(tmp_path)
    backend = open_backend(project)
    state = load_state(project, backend.storage)
    assert state is not None
    records = lifecycle.records_for(project, backend, state)

    # A submit (this process, alive) has announced its sending and not sent yet.
    lifecycle.announce_sending(records, "123")
    assert lifecycle._ends_alone(project, backend, state) is False
    saved = load_state(project, backend.storage)
    assert saved is not None and saved.active

    # Its tasks are in the manifest and queue now, none finished: still not the end.
    records.end_sending("123")
    lifecycle.submit(project, proj / "more.json", show_progress=False)
    assert lifecycle._ends_alone(project, backend, state) is False
    assert load_state(project, backend.storage).active  # type: ignore[union-attr]

    # Nothing coming, nothing unfinished (the queue purged, tasks given outcomes): the end.
    fresh = lifecycle.RunState.model_validate(state.model_dump())
    backend.queue.purge()
    for task_id in read_ledger(records).tasks:
        records.write_mark(task_id, "dead", 2.0, {"error": "test"})
    assert lifecycle._ends_alone(project, backend, fresh) is True
    assert not load_state(project, backend.storage).active  # type: ignore[union-attr]


def test_a_submit_made_as_the_run_ends_is_run_to_its_end(tmp_path: Path) -> None:
    """End to end: a run of one task; a submit of two more completes just before its
    monitor saves the run finished (the moment the run used to be lost in): the monitor
    sees them, its workers run them, and the report counts all three done."""
    project, proj = set_up(tmp_path)
    backend = open_backend(project)
    lifecycle.submit(project, proj / "job.json", show_progress=False)
    lifecycle.start_cluster(project, backend=backend)
    save = lifecycle.save_state
    submitted: list[lifecycle.SubmitResult] = []

    def submit_then_save(
        project_: lifecycle.Project, state: lifecycle.RunState, storage: object
    ) -> None:
        if state.finished_at is not None and not submitted:
            submitted.append(lifecycle.submit(project, proj / "more.json", show_progress=False))
        save(project_, state, storage)  # type: ignore[arg-type]

    lifecycle.save_state = submit_then_save  # type: ignore[assignment]
    try:
        report = lifecycle.monitor(project, backend=backend, interval=0.05, show_progress=False)
    finally:
        lifecycle.save_state = save  # type: ignore[assignment]
    assert [s.sent for s in submitted] == [2]
    assert report.counts["done"] == 3 and report.counts["total"] == 3


def test_a_submit_whose_run_is_cleaned_up_as_it_sends_says_its_tasks_will_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ds cleanup` (not a monitor: it does not wait for submits) ends the run while a
    submit sends: the submit does not say it submitted them."""
    project, proj = set_up(tmp_path)
    send_part = lifecycle.send_part

    def cleaned_up_meanwhile(*args: object, **kwargs: object) -> int:
        sent = send_part(*args, **kwargs)  # type: ignore[arg-type]
        lifecycle.cleanup(project)
        return sent

    monkeypatch.setattr(lifecycle, "send_part", cleaned_up_meanwhile)
    with pytest.raises(InputError) as raised:
        lifecycle.submit(project, proj / "more.json", show_progress=False)
    assert "while this submit was sending: its 2 task(s) will not run" in str(raised.value)


def test_a_submit_sees_the_run_ended_by_the_unattended_monitor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unattended monitor (AWS Lambda) writes only the bucket's copy of the state: it
    saves the run finished, looks for a submit and sees none, and starts the teardown. A
    submit announcing itself just after must see that copy's word and send nothing (it
    read the local copy, still in progress, and sent its tasks to the queue being
    deleted)."""
    from distributed_something.state import state_key

    project, proj = set_up(tmp_path)
    backend = open_backend(project)
    announce = lifecycle.announce_sending

    def lambda_ends_the_run_now(records: lifecycle.RunRecords, part: str) -> None:
        announce(records, part)
        state = load_state(project, backend.storage)
        assert state is not None
        state.finished_at = 1.0  # the bucket's copy only, teardown under way
        state.resources["lambda_monitor"] = {"teardown_started_at": 1.0}
        backend.storage.put_bytes(state_key(state.app_name), state.model_dump_json().encode())

    monkeypatch.setattr(lifecycle, "announce_sending", lambda_ends_the_run_now)
    with pytest.raises(InputError) as raised:
        lifecycle.submit(project, proj / "more.json", show_progress=False)
    assert "nothing was sent" in str(raised.value)
    assert backend.queue.counts().visible == 0
    current = load_state(project, backend.storage)
    assert current is not None and not current.active
