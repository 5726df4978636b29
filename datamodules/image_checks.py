"""`ImageChecks`: what decoding each image file found, remembered by the file's path, size and modification time.

Checking that every image decodes before training (so no run dies mid-epoch on a file that was bad from the start)
costs a full decode per file: about 1 ms for a 500x375 JPEG, 20 minutes for an ImageNet-sized folder, at every setup
of every rank of every run. The checks are kept in one SQLite file in tlkit's cache (``$TLKIT_CACHE_DIR``, else
``$XDG_CACHE_HOME/tlkit``, else ``~/.cache/tlkit``), so a file is decoded once, by one process (the others wait on a
file lock and read what it found), in worker processes over every core; a later setup only reads each file's size and
time.
A file that changed since (another size or modification time) is decoded again.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing
from pathlib import Path

from PIL import Image

#: Fewer files than this are decoded in this process (starting workers would cost more than it saves).
PARALLEL_FROM = 256
SCHEMA = "CREATE TABLE IF NOT EXISTS checks (path TEXT PRIMARY KEY, size INTEGER, mtime INTEGER, problem TEXT)"
#: The environment variable that moves tlkit's cache (image checks) elsewhere.
CACHE_ENV = "TLKIT_CACHE_DIR"


def cache_dir() -> Path:
    """tlkit's cache folder: ``$TLKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/tlkit``, else ``~/.cache/tlkit``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tlkit"


def decode_problem(path: Path) -> str | None:
    """Why ``path`` does not decode as an image, or None if it does (decoded in full: a truncated file fails)."""
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as err:  # noqa: BLE001 (PIL raises several types for unreadable data)
        return f"unreadable or truncated image ({err})"
    return None


class ImageChecks:
    """Decode results of image files, decoded once and then remembered.

    Args:
        store: the SQLite file (default: ``image_checks.sqlite`` in `cache_dir`).
        workers: processes that decode (default: one per core).
        decode: the check itself (default `decode_problem`).
    """

    def __init__(
        self,
        store: Path | None = None,
        workers: int | None = None,
        decode: Callable[[Path], str | None] | None = None,
    ) -> None:
        self.store = store or cache_dir() / "image_checks.sqlite"
        self.workers = workers or os.cpu_count() or 1
        self.decode = decode or decode_problem

    def problems(self, files: list[Path]) -> dict[Path, str | None]:
        """Each file's decode problem (None: it decodes), from the store where the file is unchanged, else decoded
        now and stored. Where the store cannot be written (a read-only home), every file is decoded."""
        keys = {path: _key(path) for path in files}
        try:
            self.store.parent.mkdir(parents=True, exist_ok=True)
            from filelock import FileLock

            # One process decodes what is missing; the others wait and then find it stored.
            with FileLock(str(self.store) + ".lock"), closing(sqlite3.connect(self.store, timeout=60)) as db, db:
                db.execute(SCHEMA)
                known = self._known(db, keys)
                missing = [path for path in files if path not in known]
                found = self._decode_all(missing)
                db.executemany(
                    "INSERT OR REPLACE INTO checks VALUES (?, ?, ?, ?)",
                    [(*keys[path], found[path]) for path in missing],
                )
                return {path: known[path] if path in known else found[path] for path in files}
        except (OSError, sqlite3.Error):
            return self._decode_all(files)

    def _known(self, db: sqlite3.Connection, keys: dict[Path, tuple[str, int, int]]) -> dict[Path, str | None]:
        stored = {}
        names = [key[0] for key in keys.values()]
        for start in range(0, len(names), 900):  # SQLite's limit on parameters per statement
            batch = names[start : start + 900]
            marks = ",".join("?" * len(batch))
            for row in db.execute(f"SELECT path, size, mtime, problem FROM checks WHERE path IN ({marks})", batch):
                stored[row[0]] = row[1:]
        known = {}
        for path, (name, size, mtime) in keys.items():
            entry = stored.get(name)
            if entry is not None and entry[0] == size and entry[1] == mtime:
                known[path] = entry[2]
        return known

    def _decode_all(self, files: list[Path]) -> dict[Path, str | None]:
        if self.workers == 1 or len(files) < PARALLEL_FROM:
            return {path: self.decode(path) for path in files}
        # Processes, not threads: PIL holds the GIL for most of a JPEG decode. Forked, so they start in milliseconds
        # and need nothing pickled but the paths.
        context = multiprocessing.get_context("fork")
        chunk = max(1, min(256, len(files) // (4 * self.workers)))
        with ProcessPoolExecutor(self.workers, mp_context=context) as pool:
            return dict(zip(files, pool.map(self.decode, files, chunksize=chunk)))


def _key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return os.path.abspath(path), stat.st_size, stat.st_mtime_ns  # no symlink resolution: one stat per file
