"""Run folders (``logs/<name>/version_<n>/``) that two runs started at once never share.

TensorBoard's logger picks ``version_<n>`` by listing the folder and taking the next number, and creates it only when
it first writes: two runs started together both see the same folders and both write into the same new one. Here the
folder is reserved with an exclusive ``mkdir`` (atomic on every filesystem tlkit runs on, NFS included): whoever
creates it owns it, and a run that finds the number taken takes the next.

Under DDP, Lightning starts the other ranks by running the same command again; they must use rank 0's folder, not
reserve one of their own, so rank 0 passes the number on in the environment the launcher copies to them.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

#: The reserved version number, handed from the launching process to the ranks Lightning starts after it.
VERSION_ENV = "TLKIT_RUN_VERSION"
#: What Lightning's launchers set in every process they start (and torchrun in every rank); SLURM sets its own
#: global rank in every task of an ``srun``.
_RANK_ENVS = ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


def version_number(folder: Path, prefix: str = "version_") -> int:
    """``version_7`` -> 7; -1 for a folder of another name."""
    suffix = folder.name.removeprefix(prefix)
    return int(suffix) if folder.name.startswith(prefix) and suffix.isdigit() else -1


def next_number(root: Path, prefix: str = "version_") -> int:
    """The number after the highest ``<prefix><n>`` folder in ``root`` (0 in an empty or missing folder)."""
    numbers = [version_number(p, prefix) for p in root.glob(f"{prefix}*") if p.is_dir()] if root.is_dir() else []
    return max(numbers, default=-1) + 1


def is_launched_rank() -> bool:
    """Whether this process was started by a launcher for one rank of a multi-process run (not the launching one)."""
    return any(os.environ.get(name, "0") not in ("", "0") for name in _RANK_ENVS)


@dataclass(frozen=True)
class Reservation:
    """A reserved ``<root>/<prefix><number>`` folder and the folders its reservation created (it and any parents),
    so that a run which fails before its first checkpoint can leave nothing behind (`release`)."""

    folder: Path
    number: int
    created: tuple[Path, ...] = ()

    def release(self) -> None:
        """Remove the folder if it holds no checkpoint, then each parent this reservation created that is left
        empty. Only the process that created them does anything."""
        if not self.created:
            return
        if self.folder in self.created and self.folder.is_dir() and not any(self.folder.rglob("*.ckpt")):
            shutil.rmtree(self.folder, ignore_errors=True)
        for parent in self.created:
            if parent != self.folder and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()


def reserve(root: Path, prefix: str = "version_") -> Reservation:
    """Create ``<root>/<prefix><n>`` for the next free ``n``, exclusively: two processes never get the same one."""
    missing = [p for p in (root, *root.parents) if not p.exists()]
    root.mkdir(parents=True, exist_ok=True)
    number = next_number(root, prefix)
    while True:
        try:
            (root / f"{prefix}{number}").mkdir()
            break
        except FileExistsError:  # another run took it between the listing and the mkdir
            number += 1
    folder = root / f"{prefix}{number}"
    return Reservation(folder, number, (folder, *missing))


def reserve_for_run(root: Path, prefix: str = "version_") -> Reservation:
    """The run's ``<prefix><n>`` folder in ``root``: rank 0's when this process is a launched rank, else a newly
    reserved one, whose number the launched ranks then inherit through the environment."""
    if is_launched_rank():
        # Only rank 0 writes logs and checkpoints (Lightning broadcasts its folders); without rank 0's number (torchrun
        # starts every rank itself), the number is only a name and nothing is created.
        inherited = os.environ.get(VERSION_ENV, "")
        number = int(inherited) if inherited.isdigit() else next_number(root, prefix)
        return Reservation(root / f"{prefix}{number}", number)
    reservation = reserve(root, prefix)
    os.environ[VERSION_ENV] = str(reservation.number)
    return reservation
