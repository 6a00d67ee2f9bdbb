"""The `fiji` recipe's in-task helper: fetch the script, run the engine, judge the run.

Usage (the recipe's plan builds this argv; users do not)::

    python -m distributed_something.recipes.fiji_task --engine fiji|imagej --executable EXE
        (--script PATH | --script-url URL [--script-sha256 HEX]) --argument 'k=\\'v\\', …'
        --output-dir DIR --status-file FILE [--min-outputs N]

1. The script: a local ``--script`` path (the recipe staged it from the workspace bucket), or
   ``--script-url``, downloaded once per machine and user into the cache folder
   (``$DS_CACHE_DIR``, else ``$XDG_CACHE_HOME/distributed-something``, else
   ``~/.cache/distributed-something``) under ``fiji-scripts/<sha256 of the URL>/<name>``, and
   checked against ``--script-sha256`` when given (a cached copy that does not match is
   fetched again; a download that does not match fails the task and is not kept).
2. The engine command (`distributed_something.recipes.fiji.engine_argv`) runs with its output
   streamed to this process's stdout (the task log).
3. The run succeeded when the engine exited 0, no output line contains ``Macro Error`` (what
   ImageJ prints for a macro error, and what the ImageJ 1 runner prints when ImageJ opens a
   dialog or aborts the macro) and the output folder holds at least ``--min-outputs`` files.

The outcome goes to ``--status-file`` as ``{"ok": bool, "reason": str, "engine_exit_code":
int | null, "outputs": int}``; the exit code is 0 on success, else 1 (127 when the engine
cannot be started).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from distributed_something.recipes.fiji import (
    DEFAULT_EXECUTABLES,
    ENGINES,
    engine_argv,
    script_name_from_url,
)

__all__ = [
    "MACRO_ERROR_MARKER",
    "RUNNER_SOURCE",
    "ScriptError",
    "cache_root",
    "fetch_script",
    "main",
    "resolve_fiji",
    "run_engine",
]

#: A line of engine output containing this marks the run as failed.
MACRO_ERROR_MARKER = "Macro Error"

#: Seconds a script download may take before it fails.
DOWNLOAD_TIMEOUT = 60.0

#: Where Fiji's launcher is looked for when ``ImageJ-linux64`` is not on PATH: the
#: fiji/fiji images (which Distributed-Fiji's image is built on) and a Fiji in the home folder.
FIJI_LOCATIONS = ("/opt/fiji/Fiji.app/ImageJ-linux64", "~/Fiji.app/ImageJ-linux64")

#: Runs an ImageJ 1 macro like ``java -jar ij.jar -batch MACRO ARG`` does, except that it
#: exits with code 3, after a line starting with "Macro Error", when the macro fails: an
#: exception, ``exit("message")`` (a plain ``exit`` is a normal end), an ImageJ error message
#: (``IJ.error``, e.g. "File not found", which silently ends a batch macro) or a modal dialog.
#: ImageJ 1 reports macro errors in a modal dialog, even in batch mode; under a virtual
#: display nobody can close it and the task would hang forever, so a watchdog thread prints
#: the dialog's text and ends the run. It is run by Java's single-file source launcher
#: (``java -cp ij.jar DsMacroRunner.java …``).
RUNNER_SOURCE = r"""
import ij.Macro;
import ij.macro.Interpreter;
import java.awt.Component;
import java.awt.Container;
import java.awt.Dialog;
import java.awt.Window;
import java.io.PrintStream;
import java.lang.reflect.Field;
import java.lang.reflect.Method;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.List;
import java.util.stream.Collectors;

public class DsMacroRunner {
    /** The message of the macro's exit("…"), if it called exit with one. */
    private static volatile String exitMessage;
    /** The first message of IJ.error, which ends the macro quietly in batch mode. */
    private static volatile String errorMessage;

    public static void main(String[] args) throws Exception {
        if (args.length < 1 || args.length > 2) {
            System.err.println("usage: DsMacroRunner MACRO [ARGUMENT]");
            System.exit(2);
        }
        String code = new String(Files.readAllBytes(Paths.get(args[0])), StandardCharsets.UTF_8);
        System.setOut(new ExitWatchingStream(System.out));
        Thread watchdog = new Thread(DsMacroRunner::watch, "ds-dialog-watchdog");
        watchdog.setDaemon(true);
        watchdog.start();
        // What `ij.jar -batch MACRO ARG` does, minus the catch-all that hides why a macro ended.
        Interpreter.batchMode = true;
        try {
            new Interpreter().run(code, args.length > 1 ? args[1] : "");
        } catch (RuntimeException error) {
            if (!Macro.MACRO_CANCELED.equals(error.getMessage())) {
                error.printStackTrace(System.out);
                fail("Macro Error: " + error);
            }
            // exit ends a macro by throwing MACRO_CANCELED: without a message it is a normal
            // end, with one (exit("…"), ImageJ's way to stop on a problem) a failure.
            if (exitMessage != null) {
                fail("Macro Error: the macro stopped with exit(\""
                    + oneLine(exitMessage) + "\")");
            }
        } catch (Throwable error) {
            error.printStackTrace(System.out);
            fail("Macro Error: " + error);
        }
        if (errorMessage != null) {
            fail("Macro Error: ImageJ reported an error and stopped the macro: "
                + oneLine(errorMessage));
        }
        System.out.flush();
        System.exit(0);
    }

    /** Notes the text that exit("…") shows, which ImageJ prints when it has no window. */
    private static final class ExitWatchingStream extends PrintStream {
        ExitWatchingStream(PrintStream out) {
            super(out, true);
        }

        @Override
        public void println(String line) {
            List<String> callers = StackWalker.getInstance().walk(frames -> frames
                .skip(1).limit(2)
                .map(frame -> frame.getClassName() + "." + frame.getMethodName())
                .collect(Collectors.toList()));
            if (callers.equals(List.of("ij.IJ.showMessage", "ij.macro.Functions.exit"))) {
                exitMessage = line;
            } else if (callers.equals(List.of("ij.IJ.showMessage", "ij.IJ.error"))
                    && errorMessage == null) {
                errorMessage = line;
            }
            super.println(line);
        }
    }

    private static void fail(String message) {
        System.out.println(message);
        System.out.flush();
        Runtime.getRuntime().halt(3);
    }

    private static void watch() {
        while (true) {
            for (Window window : Window.getWindows()) {
                if (window instanceof Dialog && window.isShowing() && ((Dialog) window).isModal()) {
                    pause(500);  // a dialog may be seen before its title and text are set
                    StringBuilder text = new StringBuilder();
                    collect(window, text);
                    fail("Macro Error: ImageJ opened the dialog '" + ((Dialog) window).getTitle()
                        + "', which nobody can answer in a batch run:" + text);
                }
            }
            pause(100);
        }
    }

    private static void pause(long millis) {
        try {
            Thread.sleep(millis);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    // One line, so the first "Macro Error" line of the log carries the whole message.
    private static String oneLine(String text) {
        return text == null ? "" : text.trim().replaceAll("\\s+", " ");
    }

    private static void append(StringBuilder text, String line) {
        String trimmed = oneLine(line);
        if (!trimmed.isEmpty()) text.append(" ").append(trimmed);
    }

    private static void collect(Component component, StringBuilder text) {
        try {
            Method getText = component.getClass().getMethod("getText");
            Object value = getText.invoke(component);
            if (value != null) append(text, value.toString());
        } catch (ReflectiveOperationException | RuntimeException ignored) {
        }
        try {
            // ImageJ's MultiLineLabel keeps its text in a package-private field.
            Field lines = component.getClass().getDeclaredField("lines");
            lines.setAccessible(true);
            Object value = lines.get(component);
            if (value instanceof String[]) {
                for (String line : (String[]) value) append(text, line);
            }
        } catch (ReflectiveOperationException | RuntimeException ignored) {
        }
        if (component instanceof Container) {
            for (Component child : ((Container) component).getComponents()) collect(child, text);
        }
    }
}
"""


class ScriptError(Exception):
    """The script could not be fetched or did not match its expected sha256."""


@dataclass(frozen=True)
class Outcome:
    """How a run ended, as written to the status file."""

    ok: bool
    reason: str
    engine_exit_code: int | None
    outputs: int

    def to_json(self) -> str:
        return json.dumps(
            {
                "ok": self.ok,
                "reason": self.reason,
                "engine_exit_code": self.engine_exit_code,
                "outputs": self.outputs,
            }
        )


def cache_root() -> Path:
    """The per-user cache folder: ``$DS_CACHE_DIR``, else ``$XDG_CACHE_HOME/
    distributed-something``, else ``~/.cache/distributed-something``."""
    explicit = os.environ.get("DS_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "distributed-something"


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    # Several workers on one machine may fetch the same script at once: each writes its own
    # temporary file and renames it into place, so no one ever reads a half-written script.
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".part-")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def fetch_script(url: str, sha256: str = "", *, cache: Path | None = None) -> Path:
    """The local path of the script at ``url``, downloading it only when no usable copy is
    cached.

    A cached copy is usable when no ``sha256`` is given, or when it matches it. A download
    whose sha256 differs from ``sha256`` raises ``ScriptError`` naming both digests (and is
    not cached); so does any download failure (HTTP status, unreachable host, timeout).
    """
    name = script_name_from_url(url)
    folder = (cache or cache_root()) / "fiji-scripts" / hashlib.sha256(url.encode()).hexdigest()
    path = folder / name
    expected = sha256.lower()
    if path.is_file() and (not expected or _sha256_of(path) == expected):
        return path
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
            data: bytes = response.read()
    except urllib.error.HTTPError as error:
        raise ScriptError(
            f"cannot download the script {url}: HTTP {error.code} {error.reason}"
        ) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ScriptError(f"cannot download the script {url}: {reason}") from None
    actual = hashlib.sha256(data).hexdigest()
    if expected and actual != expected:
        raise ScriptError(
            f"the script downloaded from {url} has sha256 {actual}, but tool.script_sha256 "
            f"is {expected}: the script changed or the digest is wrong; not running it"
        )
    _write_atomically(path, data)
    return path


def _runner_path(cache: Path) -> Path:
    path = cache / "fiji-runner" / "DsMacroRunner.java"
    source = RUNNER_SOURCE.encode()
    if not (path.is_file() and path.read_bytes() == source):
        _write_atomically(path, source)
    return path


def resolve_fiji(executable: str) -> str:
    """Fiji's launcher: ``executable`` when it is a path or on PATH, else the first of
    `FIJI_LOCATIONS` that exists, else ``executable`` unchanged (its start then fails with a
    clear message)."""
    if "/" in executable or shutil.which(executable) is not None:
        return executable
    for location in FIJI_LOCATIONS:
        path = Path(location).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return executable


def _count_files(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(1 for path in folder.rglob("*") if path.is_file())


def run_engine(argv: list[str], output_dir: Path, min_outputs: int) -> Outcome:
    """Run ``argv``, streaming its output to stdout, and judge the run (see the module doc)."""
    sys.stdout.flush()
    marker_line = ""
    try:
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    except OSError as error:
        hint = (
            " (install ImageJ and xvfb-run with scripts/install-imagej.sh)"
            if argv[0] in ("xvfb-run", "java")
            else " (set recipe.executable to Fiji's ImageJ-linux64)"
        )
        return Outcome(False, f"cannot start {argv[0]!r}: {error}{hint}", None, 0)
    assert process.stdout is not None
    with process.stdout:
        for raw in process.stdout:
            sys.stdout.buffer.write(raw)
            sys.stdout.buffer.flush()
            line = raw.decode(errors="replace").strip()
            if not marker_line and MACRO_ERROR_MARKER in line:
                marker_line = line
    code = process.wait()
    outputs = _count_files(output_dir)
    if code != 0:
        detail = f": {marker_line}" if marker_line else ""
        return Outcome(
            False, f"the engine ({argv[0]}) exited with code {code}{detail}", code, outputs
        )
    if marker_line:
        return Outcome(False, f"the script reported an error: {marker_line}", code, outputs)
    if outputs < min_outputs:
        return Outcome(
            False,
            f"the script exited 0 but wrote {outputs} file(s) into the output folder, fewer "
            f"than the {min_outputs} required (write results into the `output` folder "
            "passed in the arguments)",
            code,
            outputs,
        )
    return Outcome(True, "", code, outputs)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m distributed_something.recipes.fiji_task",
        description="Run one Distributed-Fiji task's script (used by the fiji recipe).",
    )
    parser.add_argument("--engine", choices=ENGINES, required=True)
    parser.add_argument("--executable", default="")
    script = parser.add_mutually_exclusive_group(required=True)
    script.add_argument("--script", type=Path, help="a local script file")
    script.add_argument("--script-url", help="an http(s) URL to fetch the script from")
    parser.add_argument("--script-sha256", default="", help="the script's expected sha256")
    parser.add_argument("--argument", required=True, help="the key='value', … string")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--status-file", type=Path, required=True)
    parser.add_argument("--min-outputs", type=int, default=1)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (0 success, 1 failure, 127 the engine
    could not be started). Always writes the status file."""
    args = _parser().parse_args(argv)
    cache = cache_root()
    outcome: Outcome
    try:
        if args.script_url:
            script = fetch_script(args.script_url, args.script_sha256, cache=cache)
            print(f"fiji_task: script {args.script_url} -> {script}", flush=True)
        else:
            script = args.script
            if not script.is_file():
                raise ScriptError(f"the script {script} is missing")
        runner = str(_runner_path(cache)) if args.engine == "imagej" else ""
        executable = args.executable
        if args.engine == "fiji":
            executable = resolve_fiji(executable or DEFAULT_EXECUTABLES["fiji"])
        command = engine_argv(
            args.engine,
            executable=executable,
            script=str(script),
            argument=args.argument,
            runner=runner,
        )
        print(f"fiji_task: running {command!r}", flush=True)
        outcome = run_engine(command, args.output_dir, args.min_outputs)
    except (ScriptError, OSError) as error:
        outcome = Outcome(False, str(error), None, _count_files(args.output_dir))
    with contextlib.suppress(OSError):
        args.status_file.parent.mkdir(parents=True, exist_ok=True)
    args.status_file.write_text(outcome.to_json())
    if outcome.ok:
        print(f"fiji_task: success ({outcome.outputs} output file(s))", flush=True)
        return 0
    print(f"fiji_task: FAILED: {outcome.reason}", file=sys.stderr, flush=True)
    if outcome.engine_exit_code is None and outcome.reason.startswith("cannot start"):
        return 127
    return 1


if __name__ == "__main__":
    sys.exit(main())
