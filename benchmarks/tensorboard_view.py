"""What TensorBoard shows for tlkit runs, checked in a real browser: the server's own data API and headless Chromium.

    python benchmarks/tensorboard_view.py --logdir logs [--screenshots benchmarks/results/tensorboard]

Starts ``tensorboard --logdir`` on loopback, asks its plugin API for each fit run's images (augmented batch,
confusion matrix, worst examples), its ``hp_metric`` and its config text, then (where ``chromium`` is installed,
Debian's package) renders the Images, HParams, Text and Projector tabs headless to PNG files for a person to look
at. Prints a table and writes ``benchmarks/results/tensorboard_view.json``. Not a test: CI installs no browser.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from _common import parse_args, results_dir, smoke, table, write_json

REPO = Path(__file__).resolve().parents[1]

IMAGES = ("train/augmented_batch", "val/confusion_matrix", "val/worst_examples")
TABS = ("images", "hparams", "text", "projector")
CHROMIUM_FLAGS = [  # no sandbox as root; no background connections, which this closed network refuses
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
    "--virtual-time-budget=15000",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fetch(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def wait_for(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            fetch(url)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def screenshot(url: str, path: Path) -> bool:
    chromium = shutil.which("chromium")
    if chromium is None:
        return False
    with tempfile.TemporaryDirectory() as profile:
        command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={path}", url]
        subprocess.run(command, capture_output=True, timeout=120)
    return path.is_file() and path.stat().st_size > 10_000  # an empty page is a few KB


def tiny_run(folder: Path) -> Path:
    """A one-epoch ``tlkit fit`` of the shipped digits config with a small random backbone, in ``folder``: its
    ``logs`` to view (a smoke run's)."""
    import contextlib

    from tlkit.cli import main as tlkit

    tiny = [
        "--model.init_args.backbone=test_resnet",
        "--model.init_args.weights=null",
        "--data.init_args.image_size=32",
    ]
    tiny += ["--data.init_args.labels_per_class=2", "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"]
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.chdir(folder):
        tlkit(["fit", "--config", str(REPO / "configs" / "digits_finetune.yaml"), *tiny])
    return folder / "logs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logdir", default="logs")
    parser.add_argument("--screenshots", default=None, help="default: benchmarks/results/tensorboard")
    args = parse_args(parser, {})
    args.screenshots = args.screenshots or str(results_dir() / "tensorboard")
    if smoke():
        args.logdir = str(tiny_run(results_dir() / "tiny_run"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    tensorboard = Path(sys.executable).with_name("tensorboard")
    server = subprocess.Popen(
        [str(tensorboard), "--logdir", args.logdir, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(f"{base}/data/runs")
        images = fetch(f"{base}/data/plugin/images/tags")
        texts = fetch(f"{base}/data/plugin/text/tags")
        scalars = fetch(f"{base}/data/plugin/scalars/tags")
        runs = sorted(run for run in scalars if "/test_" not in run and "/validate_" not in run)
        rows, records = [], []
        for run in runs:
            record = {
                "run": run,
                **{tag: tag in images.get(run, {}) for tag in IMAGES},
                "config text": "config/text_summary" in texts.get(run, []),  # add_text("config") is stored so
                "hp_metric": None,
            }
            if "hp_metric" in scalars.get(run, {}):
                query = urllib.parse.urlencode({"run": run, "tag": "hp_metric"})
                record["hp_metric"] = fetch(f"{base}/data/plugin/scalars/scalars?{query}")[-1][2]
            records.append(record)
            rows.append([run, *("yes" if record[t] else "NO" for t in (*IMAGES, "config text"))])
            rows[-1].append("-" if record["hp_metric"] is None else f"{record['hp_metric']:.4f}")
        print(table(["run", *IMAGES, "config text", "hp_metric"], rows))
        folder = Path(args.screenshots)
        folder.mkdir(parents=True, exist_ok=True)
        shots = {tab: screenshot(f"{base}/#{tab}", folder / f"{tab}.png") for tab in TABS}
        for tab, taken in shots.items():
            print(f"{tab} tab: {folder / f'{tab}.png' if taken else 'not rendered (is Debian chromium installed?)'}")
        path = write_json("tensorboard_view", {"logdir": args.logdir, "runs": records, "screenshots": shots})
        print(f"Written: {path}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
