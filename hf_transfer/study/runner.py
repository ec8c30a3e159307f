"""Running a planned study: unfinished cells in this process, in `--jobs N` worker processes, or
as Ray tasks (`--backend ray`, `study.ray_backend`).

Each worker is `python -m hf_transfer.study.cells CELL_DIR` with its share of the CPU threads;
one progress line per finished cell with an ETA from the cells done so far. A failed cell is
recorded and the others go on; Ctrl-C stops the running cells, keeps the finished ones and still
writes the report, so the same command resumes. An interrupt that something on the way drops (a
finalizer, a library's bare `except:`) is remembered and stops the study when the cell returns.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from typing import Any

import numpy as np

from hf_transfer.errors import ConfigError, HFTransferError
from hf_transfer.study import cells as cells_mod
from hf_transfer.study.cell_state import Cell, Study, cell_result, cell_status, prepare_cell, write_study_record


class _Progress:
    """One line per finished cell, with an estimate of the time left."""

    def __init__(self, study: Study, total: int, jobs: int, echo: Callable[[str], None]):
        self.study, self.total, self.jobs, self.echo = study, total, jobs, echo
        self.done = 0
        self.seconds: dict[tuple[str, int], list[float]] = {}

    def record(self, cell: Cell, seconds: float | None) -> None:
        if seconds is not None:
            self.seconds.setdefault((cell.label, cell.size), []).append(float(seconds))

    def estimate(self, cell: Cell) -> float | None:
        same = self.seconds.get((cell.label, cell.size))
        if same:
            return float(np.mean(same))
        label = [s for (lab, _), v in self.seconds.items() if lab == cell.label for s in v]
        if label:
            return float(np.mean(label))
        every = [s for v in self.seconds.values() for s in v]
        return float(np.mean(every)) if every else None

    def eta(self, remaining: list[Cell], running: dict[int, float] | None = None) -> str:
        if not remaining:
            return "done"
        guesses = [self.estimate(c) for c in remaining]
        if any(g is None for g in guesses):
            return "ETA unknown"
        total = sum(guesses) - sum((running or {}).values())
        return f"ETA {_duration(max(total, 0.0) / self.jobs)}"

    def line(
        self,
        cell: Cell,
        metrics: dict | None,
        seconds: float | None,
        remaining: list[Cell],
        error: str | None = None,
        running: dict[int, float] | None = None,
        earlier: bool = False,
    ) -> None:
        self.done += 1
        head = f"[{self.done}/{self.total}] {cell.label} n={cell.size}{self.study.size_unit} seed={cell.seed}"
        if error:
            self.echo(f"{head}: FAILED ({error.splitlines()[0][:200]}); see {cell.dir / cells_mod.CELL_LOG}")
            return
        value = (metrics or {}).get(f"eval_{self.study.metric}")
        shown = f"{self.study.metric}={value:.4f}" if isinstance(value, (int, float)) else f"{self.study.metric}=?"
        chosen = (metrics or {}).get("auto_choice")
        extra = f" chose {chosen}" if chosen else ""
        secs = f"{seconds:.1f} s" if seconds is not None else "? s"
        when = "finished earlier, skipped" if earlier else secs
        self.echo(f"{head}: {shown}{extra} ({when}) · {self.eta(remaining, running)}")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _drop_run_handlers() -> None:
    root = logging.getLogger("hf_transfer")
    for h in list(root.handlers):
        if getattr(h, "_hf_transfer", False):
            root.removeHandler(h)
            h.close()


def _run_in_process(cell: Cell) -> str | None:
    """Run one cell here, its console output into its `cell.log`; the error text, or None."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    if bars:  # transformers' bars (saving shards) would reach the console past the redirection
        hf_logging.disable_progress_bar()
    with open(cell.dir / cells_mod.CELL_LOG, "a") as log, redirect_stdout(log), redirect_stderr(log):
        try:
            cells_mod.run_cell(cell.dir)  # records backend `local` (no BACKEND_ENV in this process)
            return None
        except HFTransferError as e:
            (cell.dir / cells_mod.CELL_ERROR).write_text(str(e))
            return str(e)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # one broken cell must not lose the others
            import traceback

            text = f"{type(e).__name__}: {e}"
            (cell.dir / cells_mod.CELL_ERROR).write_text(text + "\n\n" + traceback.format_exc())
            return text
        finally:
            _drop_run_handlers()
            if bars:
                hf_logging.enable_progress_bar()


@contextmanager
def _remembered_interrupts():
    """Ctrl-C raises KeyboardInterrupt as usual, and is also remembered. Python drops an exception
    raised inside a finalizer or weakref callback ("Exception ignored in ..."), and libraries drop
    it under a bare `except:`; a remembered interrupt still stops the study once the running cell
    returns. Yields a dict whose `hit` turns True at the first Ctrl-C."""
    state = {"hit": False}
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous in (signal.SIG_IGN, None):
        yield state  # signals go to the main thread only; an ignored SIGINT stays ignored
        return

    def on_interrupt(signum, frame):
        state["hit"] = True
        if callable(previous) and previous is not signal.SIG_DFL:
            previous(signum, frame)  # Python's default handler raises KeyboardInterrupt
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


def _worker_env(jobs: int) -> dict[str, str]:
    env = dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, threads)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("TQDM_DISABLE", "1")
    env[cells_mod.BACKEND_ENV] = "local-pool"
    return env


BACKENDS = ("local", "ray")


def run_study(
    study: Study,
    jobs: int = 1,
    echo: Callable[[str], None] = print,
    in_process: bool | None = None,
    *,
    backend: str = "local",
    address: str | None = None,
    cpus_per_cell: float | None = None,
    gpus_per_cell: float = 0.0,
    ray_init: dict | None = None,
    ray_retries: int = 1,
) -> dict[str, Any]:
    """Run every unfinished cell (one at a time here, or `jobs` worker processes, or as Ray tasks),
    then write the report. Ctrl-C stops the running cells; finished cells stay, and the report
    covers them.

    Args:
        backend: `local` (this process, or `jobs` worker processes) or `ray` (one Ray task per
            cell, `study.ray_backend`); the cells' files are the same either way.
        address: Ray cluster to join (`auto`, `ray://host:10001`, `host:6379`); None starts a
            local Ray instance.
        cpus_per_cell: CPUs each Ray task declares (and torch threads per cell). Default 1.
        gpus_per_cell: GPUs each Ray task declares.
        ray_init: Extra `ray.init` arguments (`num_cpus` for a local instance).
        ray_retries: Times Ray reruns a cell whose worker died (it resumes from its checkpoint).

    Returns:
        The report (what `study.json` holds).
    """
    from hf_transfer.study.report import write_report

    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}.")
    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    if backend != "ray" and (address or cpus_per_cell is not None or gpus_per_cell):
        raise ConfigError("--address, --cpus-per-cell and --gpus-per-cell apply to --backend ray only.")
    if backend == "ray":
        from hf_transfer.study.ray_backend import check_ray_settings

        check_ray_settings(cpus_per_cell, gpus_per_cell)
    in_process = (jobs == 1 and backend == "local") if in_process is None else in_process
    write_study_record(study)
    progress = _Progress(study, len(study.cells), jobs, echo)
    pending = []
    for cell in study.cells:
        if cell_status(cell)[0] == "finished":
            progress.record(cell, (cell_result(cell) or {}).get("seconds"))
        else:
            pending.append(cell)
    for cell in pending:
        status, diff = cell_status(cell)
        if status == "changed":
            echo(f"{cell.dir.name}: settings changed since it ran ({'; '.join(diff)}): running it again.")
            progress.record(cell, (cell_result(cell) or {}).get("seconds"))  # its old time: an estimate
    done_before = [c for c in study.cells if c not in pending]
    if done_before:
        echo(f"{len(done_before)} of {len(study.cells)} cells already finished in {study.out_dir}: skipped.")
    for cell in done_before:
        m = cell_result(cell)
        progress.line(cell, m, (m or {}).get("seconds"), pending, earlier=True)
    failures: dict[str, str] = {}
    interrupted = False
    try:
        with _remembered_interrupts() as ctrl_c:
            if in_process:
                for i, cell in enumerate(pending):
                    prepare_cell(cell, study.label_names)
                    error = _run_in_process(cell)
                    m = None if error else cell_result(cell)
                    if error:
                        failures[cell.dir.name] = error
                    progress.record(cell, (m or {}).get("seconds"))
                    progress.line(cell, m, (m or {}).get("seconds"), pending[i + 1 :], error)
                    if ctrl_c["hit"]:  # pressed while the cell ran, and dropped on the way
                        raise KeyboardInterrupt
            elif backend == "ray":
                from hf_transfer.study.ray_backend import run_ray

                run_ray(
                    study,
                    pending,
                    progress,
                    failures,
                    echo=echo,
                    address=address,
                    cpus_per_cell=cpus_per_cell,
                    gpus_per_cell=gpus_per_cell,
                    init=ray_init,
                    retries=ray_retries,
                )
                if ctrl_c["hit"]:
                    raise KeyboardInterrupt
            else:
                _run_workers(study, pending, jobs, progress, failures, ctrl_c)
    except KeyboardInterrupt:
        interrupted = True
    report = write_report(study)
    if interrupted:
        echo(f"Interrupted. Finished cells are kept in {study.out_dir}; run the same command again to resume.")
        raise KeyboardInterrupt
    report["failed_cells"] = failures
    if failures:
        echo(
            f"{len(failures)} cell(s) failed: " + ", ".join(failures) + ". Their cell.log says why; "
            "run the command again to retry them."
        )
    return report


def _run_workers(
    study: Study,
    pending: list[Cell],
    jobs: int,
    progress: _Progress,
    failures: dict[str, str],
    ctrl_c: dict | None = None,
) -> None:
    env = _worker_env(jobs)
    queue = list(pending)
    running: dict[subprocess.Popen, tuple[Cell, float, Any]] = {}
    try:
        while queue or running:
            while queue and len(running) < jobs:
                cell = queue.pop(0)
                prepare_cell(cell, study.label_names)
                log = open(cell.dir / cells_mod.CELL_LOG, "a")
                proc = subprocess.Popen(
                    [sys.executable, "-m", "hf_transfer.study.cells", str(cell.dir)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
                running[proc] = (cell, time.perf_counter(), log)
            time.sleep(0.2)
            if ctrl_c is not None and ctrl_c["hit"]:
                raise KeyboardInterrupt
            for proc in [p for p in running if p.poll() is not None]:
                cell, _, log = running.pop(proc)
                log.close()
                error = None
                if proc.returncode != 0:
                    err = cell.dir / cells_mod.CELL_ERROR
                    error = err.read_text() if err.is_file() else f"exit status {proc.returncode}"
                    if proc.returncode in (130, -2):
                        raise KeyboardInterrupt
                    failures[cell.dir.name] = error
                m = None if error else cell_result(cell)
                progress.record(cell, (m or {}).get("seconds"))
                now = time.perf_counter()
                elapsed = {id(c): now - t for c, t, _ in running.values()}
                progress.line(
                    cell,
                    m,
                    (m or {}).get("seconds"),
                    queue + [c for c, _, _ in running.values()],
                    error,
                    running=elapsed,
                )
    finally:
        for proc in running:
            if proc.poll() is None:
                proc.terminate()
        for proc, (_cell, _, log) in running.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
