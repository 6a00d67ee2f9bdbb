"""The HTML run report in a real browser: Debian's chromium, headless, over DevTools.

A real small local run (`ds run` of a command project with one task that always fails)
writes the report; chromium loads it from a file:// URL at a desktop width and at a phone's
(390 CSS pixels). The test fails on any console error, uncaught exception or error-level
browser log entry, and checks the page rendered: its charts are there as SVG with a size,
and at the phone's width nothing is wider than the screen (no sideways scrolling of the
page: wide tables scroll inside their own box). A control page with a deliberate console
error and exception shows the harness catches them.

chromium comes from `make chromium` (scripts/install-chromium.sh); without it the tests skip,
and under CI=true they fail.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import NoReturn

import pytest

from browser import chromium, chromium_path
from conftest import write_project

pytestmark = pytest.mark.slow

Ds = Callable[..., CompletedProcess[str]]

DS = (sys.executable, "-m", "distributed_something")
PHONE = (390, 844)
DESKTOP = (1280, 900)

# Writes one output, except for the group named "bad", which fails with a message.
WORK = (
    "import os, sys\n"
    "name, out = sys.argv[1], sys.argv[2]\n"
    "if name == 'bad':\n"
    "    print('ERROR: cannot read input <bad> & more', file=sys.stderr); sys.exit(3)\n"
    "open(os.path.join(out, 'result.txt'), 'w').write(name)\n"
)


def unavailable(reason: str) -> NoReturn:
    """Skip — or fail under CI=true, where the browser test must run."""
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def executable() -> str:
    found = chromium_path()
    if found is None:
        unavailable("chromium is not installed (run `make chromium`)")
    return found


@pytest.fixture(scope="module")
def report_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML report of a real local run: 7 tasks done, one dead after 2 attempts."""
    import subprocess

    tmp = tmp_path_factory.mktemp("run")
    names = [f"image-{i:02d}" for i in range(7)] + ["bad"]
    proj = write_project(
        tmp / "proj",
        argv=[sys.executable, "-c", WORK, "{name}", "{output_dir}"],
        groups=[{"name": n} for n in names],
        extra={"queue": {"job_retries": 2}},
    )
    done = subprocess.run(
        [*DS, "run", str(proj), "--json", "--interval", "0.2"],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    assert done.returncode == 1, done.stderr  # the dead task
    report = json.loads(done.stdout)
    assert report["counts"]["done"] == 7 and report["counts"]["dead"] == 1, report["counts"]
    page = proj / ".ds" / "T" / "report.html"
    assert page.exists()
    return page


def test_harness_catches_console_errors_and_exceptions(executable: str, tmp_path: Path) -> None:
    control = tmp_path / "control.html"
    control.write_text(
        "<!DOCTYPE html><html><body><p>x</p><script>"
        "console.error('deliberate console error'); undefinedFunction();"
        "</script></body></html>"
    )
    with chromium(executable, tmp_path / "profile") as page:
        loaded = page.load(control.as_uri(), width=DESKTOP[0], height=DESKTOP[1])
    errors = "\n".join(loaded.errors)
    assert "deliberate console error" in errors
    assert "undefinedFunction" in errors


def test_report_loads_without_errors_and_renders_its_charts(
    executable: str, report_page: Path, tmp_path: Path
) -> None:
    with chromium(executable, tmp_path / "profile") as page:
        loaded = page.load(report_page.as_uri(), width=DESKTOP[0], height=DESKTOP[1])
        assert loaded.errors == []
        charts = page.evaluate(
            "Array.from(document.querySelectorAll('svg')).map(s => "
            "[s.id, Math.round(s.getBoundingClientRect().width), "
            "Math.round(s.getBoundingClientRect().height)])"
        )
        ids = [c[0] for c in charts]
        assert ids == ["histogram", "throughput", "timeline"]
        assert all(width > 300 and height > 100 for _, width, height in charts), charts
        bars = page.evaluate("document.querySelectorAll('#timeline rect.attempt').length")
        outcomes = page.evaluate(
            "Array.from(new Set(Array.from(document.querySelectorAll('#timeline rect.attempt'))"
            ".map(r => r.dataset.outcome))).sort()"
        )
        failures = page.evaluate("document.querySelectorAll('#failures ~ .failure').length")
        text = page.evaluate("document.body.innerText")
    assert outcomes == ["dead", "done", "failed"]  # the bad task failed, then died
    assert bars >= 3
    assert failures == 1
    assert "7 tasks done in" in text and "task(s)" not in text
    assert "Cost not shown" in text and "local backend" in text
    assert "ERROR: cannot read input <bad> & more" in text


def test_report_fits_a_phone_screen(executable: str, report_page: Path, tmp_path: Path) -> None:
    with chromium(executable, tmp_path / "profile") as page:
        loaded = page.load(report_page.as_uri(), width=PHONE[0], height=PHONE[1])
        assert loaded.errors == []
        inner = page.evaluate("window.innerWidth")
        scroll = page.evaluate("document.documentElement.scrollWidth")
        widest = page.evaluate(
            "Math.max(...Array.from(document.querySelectorAll('svg, .scroll, .failure, h1, dl'))"
            ".map(e => Math.ceil(e.getBoundingClientRect().right)))"
        )
        # The task table is wider than the phone: it scrolls inside its own box.
        table = page.evaluate(
            "(() => { const box = document.querySelector('#tasks').parentElement;"
            " return [box.className, box.scrollWidth, box.clientWidth]; })()"
        )
    assert inner == PHONE[0]
    assert scroll <= inner, f"the page scrolls sideways: {scroll} > {inner}"
    assert widest <= inner
    assert table[0] == "scroll"
