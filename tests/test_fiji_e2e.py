"""The Fiji example end to end: `ds run examples/fiji` with the real ImageJ under xvfb-run."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest
import tomli_w

from conftest import REPO, SHARED_DATA
from distributed_something.config.loader import load_config

Ds = Callable[..., CompletedProcess[str]]
EXAMPLE = REPO / "examples" / "fiji"
EXAMPLEFLY = SHARED_DATA / "examplefly"
IMAGEJ_JAR = Path("/usr/share/java/ij.jar")
POSITIONS = ("002", "076", "218")

_missing = [
    what
    for what, present in (
        (str(IMAGEJ_JAR), IMAGEJ_JAR.is_file()),
        ("xvfb-run", shutil.which("xvfb-run") is not None),
        ("java", shutil.which("java") is not None),
    )
    if not present
]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(_missing),
        reason=f"{', '.join(_missing)} missing: install ImageJ and xvfb-run with "
        "scripts/install-imagej.sh (or `make examples`)",
    ),
]


def copy_example(tmp_path: Path, *, app_name: str = "FijiFly") -> tuple[Path, Path]:
    """The example copied to ``tmp_path`` (never run in the repository), its prepare step
    pointed at the real ExampleFly images when they are here; returns (folder, bucket)."""
    folder = tmp_path / "fiji"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns(".ds"))
    config = load_config(folder / "ds.toml").model_dump(mode="json", exclude_none=True)
    config["app_name"] = app_name
    config["local"]["poll_interval"] = 0.05
    if (EXAMPLEFLY / "images").is_dir():
        config["local"]["prepare"] += ["--examplefly", str(EXAMPLEFLY)]
    (folder / "ds.toml").write_text(tomli_w.dumps(config))
    return folder, folder / ".ds" / app_name / "buckets" / "default"


def read_counts(result_dir: Path, position: str) -> int:
    """The particle count of one task, checked against its per-particle table."""
    with (result_dir / "summary.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert [row["image"] for row in rows] == [f"01_POS{position}_D"]
    count = int(rows[0]["particles"])
    with (result_dir / f"01_POS{position}_D_particles.csv").open() as stream:
        particles = list(csv.DictReader(stream))
    assert len(particles) == count
    areas = [float(row["Area"]) for row in particles]
    assert min(areas) >= 20  # Analyze Particles' size=20-Infinity pixel
    assert abs(sum(areas) - float(rows[0]["total_area_px"])) <= 1
    assert (result_dir / f"01_POS{position}_D_mask.png").stat().st_size > 0
    return count


def test_ds_run_counts_the_nuclei_of_every_position(tmp_path: Path, ds: Ds) -> None:
    folder, bucket = copy_example(tmp_path)
    # Files an earlier run left directly under output_file_location: with one flat prefix
    # per run (as in Distributed-Fiji) they would count towards check-if-done and skip tasks.
    for name in ("old1.csv", "old2.csv", "old3.csv"):
        (bucket / "results").mkdir(parents=True, exist_ok=True)
        (bucket / "results" / name).write_text("stale")

    result = ds("run", str(folder), "--json", "--interval", "0.3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["counts"]["done"] == 3 and report["counts"]["skipped"] == 0
    by_position = {task["group"]["Position"]: task for task in report["tasks"]}
    assert sorted(by_position) == list(POSITIONS)
    counts: dict[str, int] = {}
    for position, task in by_position.items():
        assert sorted(task["outputs"]) == [
            f"results/{position}/01_POS{position}_D_mask.png",
            f"results/{position}/01_POS{position}_D_particles.csv",
            f"results/{position}/summary.csv",
        ]
        counts[position] = read_counts(bucket / "results" / position, position)
    # Kc167 fields (and the stand-ins) hold a few hundred nuclei each.
    assert all(100 <= n <= 1500 for n in counts.values()), counts
    if (EXAMPLEFLY / "images").is_dir():
        # Blur sigma 2 + Otsu + size >= 20 px finds 267 on POS002 (../shared/notes).
        assert 240 <= counts["002"] <= 300, counts

    again = ds("run", str(folder), "--json", "--interval", "0.3", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["counts"]["skipped"] == 3


BROKEN_MACRO = """\
// Writes a file, then fails with a macro error (an undefined function).
args = getArgument();
start = indexOf(args, "output='") + 8;
output = substring(args, start, indexOf(args, "'", start));
File.saveString("partial", output + "/partial.txt");
x = undefinedFunction(3);
"""


def test_a_macro_error_fails_the_task_and_uploads_nothing(tmp_path: Path, ds: Ds) -> None:
    folder, bucket = copy_example(tmp_path, app_name="FijiBroken")
    (folder / "count_nuclei.ijm").write_text(BROKEN_MACRO)
    config = load_config(folder / "ds.toml").model_dump(mode="json", exclude_none=True)
    config["queue"]["job_retries"] = 1
    (folder / "ds.toml").write_text(tomli_w.dumps(config))
    job = json.loads((folder / "job.json").read_text())
    job["groups"] = job["groups"][:1]
    (folder / "job.json").write_text(json.dumps(job))

    result = ds("run", str(folder), "--json", "--interval", "0.3", cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["counts"]["dead"] == 1 and report["counts"]["done"] == 0
    assert "Macro Error" in (report["tasks"][0]["error"] or "")
    assert "undefinedFunction" in (report["tasks"][0]["error"] or "")
    assert not (bucket / "results").exists()  # the partial file was never uploaded


@pytest.mark.parametrize(
    ("macro", "error"),
    [
        # A macro error: ImageJ 1 shows it in a modal dialog, which the runner reports.
        ('print("start");\nx = undefinedFunction(3);\n', "Undefined identifier in line 2"),
        # exit("…") is ImageJ's way to stop on a problem.
        ('print("start");\nexit("no images found");\n', 'exit("no images found")'),
        # An ImageJ error message (IJ.error), which quietly ends a batch macro.
        ('open("/no/such/image.tif");\nprint("not reached");\n', "File not found"),
    ],
)
def test_imagej_runner_fails_on_macro_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, macro: str, error: str
) -> None:
    code, status = run_imagej_helper(tmp_path, monkeypatch, macro)
    assert code == 1 and status["ok"] is False
    assert "Macro Error" in status["reason"] and error in status["reason"]


def test_imagej_runner_accepts_a_plain_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    macro = (
        'args = getArgument();\nstart = indexOf(args, "output=\'") + 8;\n'
        'output = substring(args, start, indexOf(args, "\'", start));\n'
        'File.saveString("ok", output + "/result.txt");\nexit;\nprint("not reached");\n'
    )
    code, status = run_imagej_helper(tmp_path, monkeypatch, macro)
    assert (code, status["ok"], status["outputs"]) == (0, True, 1)


def run_imagej_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, macro: str
) -> tuple[int, dict[str, object]]:
    """Run one macro through the fiji recipe's helper with the imagej engine."""
    from distributed_something.recipes import fiji_task

    monkeypatch.setenv("DS_CACHE_DIR", str(tmp_path / "cache"))
    script = tmp_path / "macro.ijm"
    script.write_text(macro)
    output = tmp_path / "outputs"
    output.mkdir()
    status_file = tmp_path / "status.json"
    code = fiji_task.main(
        [
            "--engine",
            "imagej",
            "--executable",
            str(IMAGEJ_JAR),
            "--script",
            str(script),
            "--argument",
            f"input='{tmp_path}', output='{output}'",
            "--output-dir",
            str(output),
            "--status-file",
            str(status_file),
        ]
    )
    return code, json.loads(status_file.read_text())
