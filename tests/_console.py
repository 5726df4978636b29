"""Run the installed ``tlkit`` console script as a user does: a subprocess in a folder of its own, offline."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TLKIT = Path(sys.executable).parent / "tlkit"
#: Variables a DDP test run must not inherit from a test process that ran Lightning itself.
RANK_VARIABLES = (
    "LOCAL_RANK",
    "NODE_RANK",
    "GROUP_RANK",
    "WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TLKIT_RUN_VERSION",
)


def console_env() -> dict[str, str]:
    """The environment of a user's shell: offline, the repository importable (for test callbacks), no rank variables."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for name in RANK_VARIABLES:
        env.pop(name, None)
    return env


#: A shipped image config made tiny: a small random-init backbone at 32 px (seconds per epoch on a CPU).
TINY_IMAGE_MODEL = [
    "--model.init_args.backbone=test_resnet",
    "--model.init_args.weights=null",
    "--data.init_args.image_size=32",
]


def run_here(args: list[str], folder: Path | None = None) -> None:
    """``tlkit <args>`` in this process (the console script's own entry point, on one thread as a console run has
    with OMP_NUM_THREADS=1), in ``folder`` (default: here): seconds less than a new process, the same numbers."""
    import torch

    from tlkit.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.chdir(folder or Path.cwd()):
            main(args)
    finally:
        torch.set_num_threads(threads)


def run_here_captured(args: list[str], folder: Path, capfd: Any) -> subprocess.CompletedProcess:
    """``tlkit <args>`` as `run_here` runs it, returned as a console run's would be: its exit status (a
    ``SystemExit``'s code, 0 when it returns) and what it wrote to stdout and stderr (``capfd``, pytest's fixture)."""
    import logging

    # A console run's Lightning logs to stderr (its handler, added where the root logger has none); under pytest the
    # root logger has pytest's, so Lightning's lines would reach only the log capture.
    lightning_log = logging.getLogger("lightning.pytorch")
    to_stderr = logging.StreamHandler(sys.stderr)
    capfd.readouterr()  # what the test printed before is not the command's
    lightning_log.addHandler(to_stderr)
    try:
        run_here(args, folder)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    finally:
        lightning_log.removeHandler(to_stderr)
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(["tlkit", *args], code, out, err)


def shipped(config: str, *extra: str) -> list[str]:
    """``fit --config configs/<config>`` and ``extra`` options."""
    return ["fit", "--config", str(REPO / "configs" / config), *extra]


def start_tlkit(
    args: list[str],
    cwd: Path,
    stdout: Any = subprocess.PIPE,
    stderr: Any = subprocess.PIPE,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """``tlkit <args>`` started in ``cwd`` in a process group of its own (with every rank it launches); ``env`` is
    added to the console environment."""
    return subprocess.Popen(
        [str(TLKIT), *args],
        cwd=cwd,
        env={**console_env(), **(env or {})},
        stdout=stdout,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )


def tlkit(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``tlkit <args>`` in ``cwd``; the whole process group is killed if it runs past ``timeout`` (a hung DDP run
    would otherwise keep its other ranks alive)."""
    process = start_tlkit(args, cwd)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        stdout, stderr = process.communicate()
        raise AssertionError(f"tlkit {' '.join(args)} ran past {timeout} s (hung?):\n{stderr[-3000:]}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def tlkit_ranks_at_once(args: list[str], cwd: Path, devices: int = 2, timeout: float = 120) -> None:
    """``tlkit <args> --trainer.devices=<devices>`` with every rank started at once, as an external launcher (SLURM,
    torchrun) starts them, through the variables Lightning's own launcher gives the ranks it starts: that launcher
    starts them only when rank 0 reaches ``fit``, which doubles a short run's start-up. Fails with the ranks'
    errors when one fails; kills them all if the run hangs."""
    port = str(random.randint(20000, 40000))
    shared = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": str(devices), "NODE_RANK": "0"}
    ranks = [
        start_tlkit(
            [*args, f"--trainer.devices={devices}"],
            cwd,
            stdout=subprocess.DEVNULL,
            env={**shared, "LOCAL_RANK": str(r)},
        )
        for r in range(devices)
    ]
    wait_for_all(ranks, timeout)


def wait_for_all(processes: list[subprocess.Popen], timeout: float) -> None:
    """Wait for ``processes`` (each in a process group of its own, stderr piped), kill every group that is left
    (a hung rank keeps the others waiting), and fail with their errors unless every one exited 0."""
    try:
        errors = [process.communicate(timeout=timeout)[1] for process in processes]
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
    codes = [process.returncode for process in processes]
    assert codes == [0] * len(processes), "\n".join(e[-2000:] for e in errors)
