"""The harness of the bad-input tests: run one hpcfed command as a user would and check how it refuses.

Every case asserts the same contract (issue #19): the exit code, a first line that names the problem and the
fix, no Python traceback anywhere in the output, an end within 60 s, and, for every file that existed before,
the same bytes after. Commands that never reach MPI run in this process through click's runner (a fresh Python
costs ~3 s of torch imports per case); commands that launch ranks, take signals or test the entry points run
as real processes, under `mpiexec` when they need ranks.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from conftest import MPIEXEC, REPO

LIMIT_SECONDS = 60


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    seconds: float
    exception: BaseException | None = None  # in-process only: an exception other than SystemExit

    @property
    def first_line(self) -> str:
        """The first line the user reads about the problem: stderr first (errors), else stdout."""
        for text in (self.err, self.out):
            lines = [line for line in text.splitlines() if line.strip()]
            if lines:
                return lines[0]
        return ""


def run_in_process(args: list[str], cwd: Path | None = None) -> Outcome:
    from hpcfed.cli import main

    previous = Path.cwd()
    os.chdir(cwd or previous)
    try:
        start = time.perf_counter()
        result = CliRunner().invoke(main, args, prog_name="hpcfed")
        seconds = time.perf_counter() - start
    finally:
        os.chdir(previous)
    unexpected = None if result.exception is None or isinstance(result.exception, SystemExit) else result.exception
    # An in-process case must fail before MPI: an MPI initialised in pytest's process would outlive the case.
    mpi = sys.modules.get("mpi4py.MPI")
    assert mpi is None or not mpi.Is_initialized(), f"{args} initialised MPI in the test process; run it with " \
        "run_process instead"
    return Outcome(result.exit_code, result.stdout, result.stderr, seconds, unexpected)


def run_process(args: list[str], cwd: Path | None = None, ranks: int | None = None, env: dict | None = None,
                timeout: float = LIMIT_SECONDS) -> Outcome:
    """`python -m hpcfed ARGS` (under the venv's mpiexec with `ranks`); killed and reported at `timeout`."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    full_env.pop("SLURM_NTASKS", None)
    command = [sys.executable, "-m", "hpcfed", *args]
    if ranks is not None:
        command = [str(MPIEXEC), "-n", str(ranks), *command]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=full_env,
                              cwd=cwd or REPO)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{' '.join(args)} did not end within {timeout} s; output so far:\n"
                             f"{e.stdout}\n{e.stderr}") from None
    return Outcome(done.returncode, done.stdout, done.stderr, time.perf_counter() - start)


def fingerprint(*paths: Path) -> dict[str, str]:
    """sha256 of every file under `paths` (files or directories), to show that nothing was touched."""
    out = {}
    for path in paths:
        files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest() if f.exists() else "absent"
    return out


def assert_refused(outcome: Outcome, code: int, problem: str | tuple[str, ...], fix: str | tuple[str, ...],
                   untouched: dict[str, str] | None = None) -> None:
    """The contract of every case. `problem` and `fix` are substrings (any of a tuple) of the first line,
    compared case-insensitively; `untouched` is a `fingerprint` taken before the command."""
    shown = f"exit {outcome.code}\n--- stdout\n{outcome.out}\n--- stderr\n{outcome.err}"
    assert outcome.exception is None, f"raised {outcome.exception!r}\n{shown}"
    assert "Traceback" not in outcome.out + outcome.err, shown
    assert outcome.code == code, shown
    first = outcome.first_line.lower()
    for wanted, what in ((problem, "problem"), (fix, "fix")):
        options = (wanted,) if isinstance(wanted, str) else wanted
        assert any(o.lower() in first for o in options), f"first line does not name the {what} {options}:\n{shown}"
    assert outcome.seconds < LIMIT_SECONDS, f"took {outcome.seconds:.0f} s\n{shown}"
    if untouched is not None:
        assert fingerprint(*map(Path, untouched)) == untouched, f"files changed\n{shown}"
    if os.environ.get("HPCFED_CASE_LOG"):  # the table of cases (exit code, first line) for the note
        case = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
        with open(os.environ["HPCFED_CASE_LOG"], "a") as log:
            log.write(f"{case}\t{outcome.code}\t{outcome.seconds:.1f}\t{outcome.first_line}\n")


def run_and_signal(args: list[str], ranks: int, when: str, signals: list[int], cwd: Path | None = None,
                   timeout: float = LIMIT_SECONDS) -> Outcome:
    """Launch `python -m hpcfed ARGS` on `ranks` under mpiexec and send `signals` (0.3 s apart) to the launcher,
    as a user's Ctrl-C or a scheduler's SIGTERM would, as soon as a line of stdout contains `when`."""
    import signal
    import threading

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("SLURM_NTASKS", None)
    command = [str(MPIEXEC), "-n", str(ranks), sys.executable, "-m", "hpcfed", *args]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=cwd or REPO)
    err_chunks: list[str] = []
    reader = threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True)
    reader.start()
    out_lines, sent = [], False
    deadline = start + timeout
    for line in proc.stdout:
        out_lines.append(line)
        if not sent and when in line:
            for k, s in enumerate(signals):
                if k:
                    time.sleep(0.3)
                proc.send_signal(s)
            sent = True
        if time.perf_counter() > deadline:
            break
    try:
        proc.wait(timeout=max(1.0, deadline - time.perf_counter()))
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"{' '.join(args)} did not end within {timeout} s after the signal; output:\n"
                             f"{''.join(out_lines)}") from None
    reader.join(5)
    assert sent, f"never saw {when!r} in the output:\n{''.join(out_lines)}\n{''.join(err_chunks)}"
    return Outcome(proc.returncode, "".join(out_lines), "".join(err_chunks), time.perf_counter() - start)
