"""Inference after export: latency (batch 1) and throughput (batch 32) of eager PyTorch, TorchScript and onnxruntime
on this CPU, for tf_efficientnet_lite0 at its native 224 px and ResNet-50 (random init: timing only), plus file sizes.

    python benchmarks/export.py [--repeats 30] [--models tf_efficientnet_lite0 resnet50]

Each model is fitted for one step, saved as a tlkit checkpoint and exported with `tlkit.engines.export.export` (so
the files are the ones users get, verified); the three runtimes then run side by side in one process, warmed up, and the
table quotes medians. Prints a Markdown table and writes benchmarks/results/export.json.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from _common import machine, parse_args, table, write_json

from tlkit.datamodules import DigitsDataModule
from tlkit.engines.export import FILES, ExportedModel, export, load_strategy
from tlkit.strategies import FineTuning


def checkpoint(name: str, weights: str | None, folder: Path, image_size: int) -> Path:
    L.seed_everything(0, verbose=False)
    model = FineTuning(name, weights=weights)
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(model, datamodule=DigitsDataModule(image_size=image_size, batch_size=2, labels_per_class=1))
    path = folder / f"{name}.ckpt"
    trainer.save_checkpoint(path)
    return path


def median_seconds(run, batch: np.ndarray, repeats: int) -> float:
    for _ in range(3):
        run(batch)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run(batch)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def runtimes(ckpt: Path, exported: Path) -> dict:
    import onnxruntime

    strategy = load_strategy(ckpt)
    eager = ExportedModel(strategy.backbone, strategy.head, strategy.task).eval()
    scripted = torch.jit.load(str(exported / FILES["torchscript"]), map_location="cpu").eval()
    session = onnxruntime.InferenceSession(str(exported / FILES["onnx"]), providers=["CPUExecutionProvider"])

    def torch_runner(module):
        def run(batch):
            with torch.inference_mode():
                return module(torch.from_numpy(batch)).numpy()

        return run

    nhwc = copy.deepcopy(eager).to(memory_format=torch.channels_last)  # a copy: `eager` keeps NCHW weights

    def channels_last(batch):
        with torch.inference_mode():
            return nhwc(torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)).numpy()

    return {
        "eager PyTorch": (torch_runner(eager), ckpt),
        "eager PyTorch, channels_last": (channels_last, ckpt),
        "TorchScript": (torch_runner(scripted), exported / FILES["torchscript"]),
        "onnxruntime": (lambda batch: session.run(None, {"images": batch})[0], exported / FILES["onnx"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--models", nargs="+", default=["tf_efficientnet_lite0", "resnet50"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32, help="the throughput batch")
    args = parse_args(parser, {"repeats": 1, "models": ["tf_efficientnet_lite0"], "image_size": 64, "batch": 4})
    size = args.image_size
    weights = {"tf_efficientnet_lite0": "imagenet"}
    rows, results = [], []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for name in args.models:
            ckpt = checkpoint(name, weights.get(name), folder, size)
            report = export(ckpt, folder / f"{name}-export")
            rng = np.random.default_rng(0)
            single = rng.standard_normal((1, 3, size, size), dtype=np.float32)
            batch = rng.standard_normal((args.batch, 3, size, size), dtype=np.float32)
            measured = {}
            for runtime, (run, path) in runtimes(ckpt, folder / f"{name}-export").items():
                latency = median_seconds(run, single, args.repeats)
                throughput = args.batch / median_seconds(run, batch, max(3, args.repeats // 5))
                measured[runtime] = {"latency_ms": 1000 * latency, "images_per_s": throughput,
                                     "file_mb": path.stat().st_size / 2**20}  # fmt: skip
            eager = measured["eager PyTorch"]
            for runtime, m in measured.items():
                latency_ratio = eager["latency_ms"] / m["latency_ms"]
                throughput_ratio = m["images_per_s"] / eager["images_per_s"]
                rows.append([f"`{name}`", runtime, f"{m['latency_ms']:.1f} ms", f"{latency_ratio:.2f}x",
                             f"{m['images_per_s']:.1f}", f"{throughput_ratio:.2f}x",
                             f"{m['file_mb']:.1f} MB"])  # fmt: skip
            results.append({"model": name, "max_difference": report.max_difference, "runtimes": measured})
    header = ["model", "runtime", "latency, batch 1", "speed-up", f"throughput, batch {args.batch} (img/s)", "speed-up"]
    header.append("file")
    print(table(header, rows))
    print(
        f"\nMachine: {machine()}; {size} px; medians of {args.repeats} (batch 1) and {max(3, args.repeats // 5)} "
        f"(batch {args.batch}) runs"
    )
    print("The eager file is the whole Lightning checkpoint (optimizer state included).")
    print("channels_last: the same eager model with NHWC weights and inputs (what tlkit's feature cache runs).")
    print(f"Wrote {write_json('export', {'repeats': args.repeats, 'results': results})}")


if __name__ == "__main__":
    main()
