"""Images are decoded in full once, not at every setup: the checks are remembered by path, size and time, shared by
processes that start together, and a file changed since is decoded again."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests._console import run_here_captured
from tests.conftest import write_image_folder
from tlkit.datamodules import ImageFolderDataModule
from tlkit.datamodules.image_checks import PARALLEL_FROM, ImageChecks, cache_dir, decode_problem
from tlkit.errors import ConfigError


class CountingDecode:
    def __init__(self) -> None:
        self.paths: list[Path] = []
        self.lock = threading.Lock()

    def __call__(self, path: Path) -> str | None:
        with self.lock:
            self.paths.append(path)
        return decode_problem(path)


def test_a_second_setup_decodes_nothing_and_a_changed_file_is_decoded_again(tmp_path, monkeypatch):
    images = write_image_folder(tmp_path / "images", per_class=10)
    files = sorted(images.rglob("*.png"))
    counting = CountingDecode()
    monkeypatch.setattr("tlkit.datamodules.image_checks.decode_problem", counting)
    ImageFolderDataModule(str(images)).setup("fit")
    assert sorted(counting.paths) == files  # every image decoded in full, once
    counting.paths.clear()
    ImageFolderDataModule(str(images)).setup("fit")
    assert counting.paths == []
    broken = files[4]
    broken.write_bytes(broken.read_bytes()[:-60])  # truncated after it was checked: another size
    with pytest.raises(ConfigError, match=rf"{broken.name}' is unreadable or truncated image"):
        ImageFolderDataModule(str(images)).setup("fit")
    assert counting.paths == [broken]


def test_processes_that_start_together_decode_each_file_once(tmp_path):
    images = write_image_folder(tmp_path / "images", per_class=30)
    files = sorted(images.rglob("*.png"))
    store, counting = tmp_path / "checks.sqlite", CountingDecode()
    results = []
    ranks = [
        threading.Thread(target=lambda: results.append(ImageChecks(store, workers=2, decode=counting).problems(files)))
        for _ in range(2)
    ]
    for rank in ranks:
        rank.start()
    for rank in ranks:
        rank.join()
    assert sorted(counting.paths) == files  # one of them decoded every file; the other read what it found
    assert results[0] == results[1] == dict.fromkeys(files)


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TLKIT_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("TLKIT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "tlkit"
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    files = sorted(write_image_folder(tmp_path / "images", per_class=2).rglob("*.png"))
    checks = ImageChecks(blocked / "checks.sqlite")  # cannot be created: every file decoded, no error
    assert checks.problems(files) == dict.fromkeys(files)


class DamageAfterSetup(ImageFolderDataModule):
    """Images that break after setup checked them (a file on network storage replaced during the run)."""

    def setup(self, stage=None):
        super().setup(stage)
        for path in self.splits["train"].samples:
            path.write_bytes(path.read_bytes()[:100])


def test_an_image_damaged_after_setup_stops_training_with_one_line_naming_it(tmp_path, capfd):
    images = write_image_folder(tmp_path / "images", per_class=8)
    ImageFolderDataModule(str(images)).setup("fit")  # checked: every file decodes

    fit = [
        "fit",
        "--model=FineTuning",
        "--model.backbone=test_resnet",
        "--model.weights=null",
        "--data=tests.datamodules.test_image_checks.DamageAfterSetup",
        f"--data.data_dir={images}",
        "--data.image_size=32",
        "--data.num_workers=2",
        "--trainer.max_epochs=1",
    ]
    result = run_here_captured(fit, tmp_path, capfd)
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-2]
    assert "Expected every image to decode as it did when setup checked it, but '" in line and ".png' does not" in line
    assert "Traceback" not in result.stderr


def test_a_large_folder_is_decoded_by_worker_processes_that_find_the_broken_file(tmp_path):
    files = sorted(write_image_folder(tmp_path / "images", per_class=100, size=8).rglob("*.png"))
    assert len(files) >= PARALLEL_FROM  # worker processes, not this one
    files[123].write_bytes(files[123].read_bytes()[:40])
    found = ImageChecks(tmp_path / "checks.sqlite", workers=2).problems(files)
    assert [path for path, problem in found.items() if problem is not None] == [files[123]]
    assert "unreadable or truncated image" in found[files[123]]
