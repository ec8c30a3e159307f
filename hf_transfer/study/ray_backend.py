"""`hf-transfer compare --backend ray`: each unfinished cell is one Ray task.

A task declares its resources (`--cpus-per-cell`, default 1, and `--gpus-per-cell`) and runs the
cell exactly as the local pool does: `python -m hf_transfer.study.cells CELL_DIR` in a fresh
process (torch threads = the CPUs it declared), its console output appended to the cell's
`cell.log`. The cell writes its run folder, `metrics.json` and `study_cell.json` (with
`backend: ray` and the host) into the study folder itself, so resume, `--rerun-changed`, the report
and the plot do not know which backend ran a cell. On several machines the study folder (and the
data and model paths in the config) must therefore be on a filesystem every node mounts at the
same path, as a cluster's shared home or scratch is.

A cell whose Ray worker dies (killed, node lost) is retried `retries` times by Ray: the new
attempt resumes from the cell's last checkpoint. A cell process that fails is recorded as failed
(as in the local pool) and the others go on; running the command again reruns only unfinished
cells. The cell process is tied to its Ray worker (Linux `PR_SET_PDEATHSIG`): cancelling the task
or killing the worker ends the cell too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hf_transfer.errors import ConfigError
from hf_transfer.study import cells as cells_mod
from hf_transfer.study.cell_state import Cell, Study, cell_result, prepare_cell

INSTALL_HINT = "pip install 'hf-transfer-toolkit[ray]'"
#: Environment passed from the driver to every cell process (paths and offline switches).
PASS_ENV = (
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_DATASETS_CACHE",
    "HF_TRANSFER_CACHE",
    "TRANSFORMERS_OFFLINE",
    "PYTHONPATH",
)


def require_ray():
    """The `ray` module, or `ConfigError` with the install line."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--backend ray needs Ray, which is not installed: {INSTALL_HINT}.") from None
    return ray


def check_ray_settings(cpus_per_cell: float | None, gpus_per_cell: float) -> None:
    """Ray installed and the per-cell resources sensible; before the study is planned."""
    require_ray()
    if cpus_per_cell is not None and cpus_per_cell <= 0:
        raise ConfigError(f"--cpus-per-cell must be positive, got {cpus_per_cell}.")
    if gpus_per_cell < 0:
        raise ConfigError(f"--gpus-per-cell must be 0 or more, got {gpus_per_cell}.")


def _die_with_parent() -> None:  # runs in the cell process before exec
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: the cell may outlive a killed worker
        pass


def run_cell_task(cell_dir: str, env: dict[str, str]) -> tuple[int, str]:
    """The body of a cell's Ray task (on whichever node Ray chose): the cell in a fresh process.

    Returns:
        (exit status of the cell process, host name).
    """
    import socket
    import subprocess
    import sys

    full = dict(os.environ)
    full.update(env)
    with open(Path(cell_dir) / cells_mod.CELL_LOG, "a") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "hf_transfer.study.cells", cell_dir],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    return proc.returncode, socket.gethostname()


def cell_env(cpus_per_cell: float) -> dict[str, str]:
    """What every cell process gets: its thread count, the backend name, the driver's HF settings."""
    threads = str(max(1, int(cpus_per_cell)))
    env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    env.update(
        {
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "TOKENIZERS_PARALLELISM": "false",
            "TQDM_DISABLE": "1",
            cells_mod.BACKEND_ENV: "ray",
        }
    )
    return env


def run_ray(
    study: Study,
    pending: list[Cell],
    progress,
    failures: dict[str, str],
    *,
    echo: Callable[[str], None] = print,
    address: str | None = None,
    cpus_per_cell: float | None = None,
    gpus_per_cell: float = 0.0,
    init: dict | None = None,
    retries: int = 1,
) -> None:
    """Submit every pending cell as a Ray task and record each as it finishes (module docstring).

    Joins the cluster at `address` (or the one `ray.init` finds: `RAY_ADDRESS`, else a new local
    instance); a Ray session started here is shut down at the end.
    """
    ray = require_ray()
    cpus = 1.0 if cpus_per_cell is None else float(cpus_per_cell)
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(
                address=address, include_dashboard=False, log_to_driver=False, configure_logging=False, **(init or {})
            )
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ConfigError(
                f"Cannot reach the Ray cluster at {address!r}: {e}. Start it with `ray start --head` "
                "(docs/distributed.md) or leave --address out for a local one."
            ) from None
    try:
        total = ray.cluster_resources()
        if total.get("CPU", 0) < cpus or total.get("GPU", 0) < gpus_per_cell:
            raise ConfigError(
                f"Each cell asks for {cpus:g} CPU(s) and {gpus_per_cell:g} GPU(s), but the Ray cluster has "
                f"{total.get('CPU', 0):g} CPU(s) and {total.get('GPU', 0):g} GPU(s) in all: lower "
                "--cpus-per-cell / --gpus-per-cell or add nodes."
            )
        progress.jobs = max(
            1,
            int(
                min(
                    total.get("CPU", 1) // cpus, total.get("GPU", 0) // gpus_per_cell if gpus_per_cell else float("inf")
                )
            ),
        )
        echo(
            f"Ray: {len(pending)} cell(s) as tasks of {cpus:g} CPU / {gpus_per_cell:g} GPU each on a cluster of "
            f"{total.get('CPU', 0):g} CPU(s), {total.get('GPU', 0):g} GPU(s), {len(ray.nodes())} node(s)."
        )
        task = ray.remote(num_cpus=cpus, num_gpus=gpus_per_cell, max_retries=retries, retry_exceptions=False)(
            run_cell_task
        )
        env = cell_env(cpus)
        refs: dict[Any, tuple[Cell, float]] = {}
        for cell in pending:
            prepare_cell(cell, study.label_names)
            refs[task.remote(str(cell.dir.resolve()), env)] = (cell, time.perf_counter())
        try:
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
                for ref in done:
                    cell, _ = refs.pop(ref)
                    error = _outcome(ray, ref, cell)
                    if error:
                        failures[cell.dir.name] = error
                    m = None if error else cell_result(cell)
                    progress.record(cell, (m or {}).get("seconds"))
                    progress.line(cell, m, (m or {}).get("seconds"), [c for c, _ in refs.values()], error)
        except BaseException:
            for ref in refs:
                ray.cancel(ref, force=True)
            raise
    finally:
        if started:
            ray.shutdown()


def _outcome(ray, ref, cell: Cell) -> str | None:
    """None when the cell finished, else what went wrong."""
    try:
        code, host = ray.get(ref)
    except ray.exceptions.RayError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"the Ray worker running it died ({type(e).__name__}: {first[:200]}); run the command again to resume it"
    if code == 0:
        return None
    if code in (130, -2):
        raise KeyboardInterrupt
    err = cell.dir / cells_mod.CELL_ERROR
    return err.read_text() if err.is_file() else f"exit status {code} on {host}"
