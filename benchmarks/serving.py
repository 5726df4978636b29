"""`tlkit serve` under load: requests per second and latency percentiles at concurrency 1, 8 and 32, with batching
off and on, against the same exported model called in-process with onnxruntime at the same batch sizes.

    python benchmarks/serving.py [--requests 256] [--repeats 3] [--model tf_efficientnet_lite0]

The model is tf_efficientnet_lite0 (ImageNet weights, offline) fitted one step on the digits, exported with
`tlkit export` and served from the export folder (`tlkit serve --model_dir`, ONNX Runtime), so both sides run the
same file. Every request is one JPEG photo (about 512 x 340 px) as base64 JSON, sent by Python clients on this
machine (one keep-alive connection per client thread): decoding, resizing and the HTTP round trip are counted on
both sides, as a user's own loop would count them in-process (decode the files, preprocess, run a batch). Each
setting is measured `--repeats` times (a fresh set of requests each) and the table quotes medians. Prints a
Markdown table and writes benchmarks/results/serving.json.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _common import machine, parse_args, quiet_trainer, table, write_json

from tlkit.datamodules import DigitsDataModule
from tlkit.engines.export import FILES, export
from tlkit.engines.preprocessing import preprocess, verification_images
from tlkit.engines.served_models import open_image
from tlkit.strategies import FineTuning

TLKIT = Path(sys.executable).parent / "tlkit"
#: The two server settings: LitServe's defaults (each request alone), and dynamic batching.
SETTINGS = {"batching off": ["--max_batch_size=1"], "batching on": ["--max_batch_size=32", "--batch_timeout=0.01"]}


def exported_model(name: str, weights: str | None, folder: Path, image_size: int) -> Path:
    model = FineTuning(name, weights=weights)
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(model, datamodule=DigitsDataModule(image_size=image_size, batch_size=2, labels_per_class=1))
    trainer.save_checkpoint(folder / "model.ckpt")
    export(folder / "model.ckpt", folder / "exported", formats=["onnx"])
    return folder / "exported"


def request_files() -> list[bytes]:
    """The bundled photos as the JPEG files a client would send."""
    files = []
    for image in verification_images():
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=90)
        files.append(buffer.getvalue())
    return files


def in_process(exported: Path, files: list[bytes], batch: int, count: int) -> float:
    """Images per second of decode + preprocess + onnxruntime in batches of ``batch``, over ``count`` images."""
    import onnxruntime

    spec = json.loads((exported / "model.json").read_text())["preprocessing"]
    session = onnxruntime.InferenceSession(str(exported / FILES["onnx"]), providers=["CPUExecutionProvider"])

    def run(chunk: list[bytes]) -> None:
        images = np.stack([preprocess(open_image(data, "file"), spec) for data in chunk])
        session.run(None, {"images": images})

    run(files[:batch])  # warm-up
    started = time.perf_counter()
    for start in range(0, count, batch):
        run([files[(start + i) % len(files)] for i in range(min(batch, count - start))])
    return count / (time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(exported: Path, options: list[str], log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(
        [str(TLKIT), "serve", "--model_dir", str(exported), f"--port={port}", *options],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tlkit serve ended: {log.read_text()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().read() == b"ok":
                return process, port
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("tlkit serve did not answer /health within 120 s")


def stop_server(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def load(port: int, bodies: list[bytes], concurrency: int, count: int) -> tuple[float, list[float]]:
    """``count`` requests from ``concurrency`` clients: requests per second and each request's latency (s)."""

    def client(worker: int) -> list[float]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        latencies = []
        for index in range(worker, count, concurrency):
            started = time.perf_counter()
            connection.request("POST", "/predict", bodies[index % len(bodies)], {"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200:
                raise RuntimeError(f"status {response.status}: {answer[:200]!r}")
            latencies.append(time.perf_counter() - started)
        connection.close()
        return latencies

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as clients:
        latencies = [t for part in clients.map(client, range(concurrency)) for t in part]
    return count / (time.perf_counter() - started), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=256, help="requests per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--model", default="tf_efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet", help="the model's weights ('none': random init)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    smoke = {"requests": 8, "repeats": 1, "concurrency": [2], "image_size": 32, "settings": ["batching on"]}
    smoke.update(model="test_resnet", weights="none")
    args = parse_args(parser, smoke)
    files = request_files()
    bodies = [json.dumps({"image": base64.b64encode(data).decode()}).encode() for data in files]
    results: dict = {"in_process": {}, "served": {}}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        weights = None if args.weights == "none" else args.weights
        exported = exported_model(args.model, weights, Path(folder), args.image_size)
        for batch in sorted(set(args.concurrency)):
            speeds = [in_process(exported, files, batch, args.requests) for _ in range(args.repeats)]
            results["in_process"][batch] = speeds
        for setting in args.settings:
            process, port = start_server(exported, SETTINGS[setting], Path(folder) / "serve.log")
            try:
                load(port, bodies, max(args.concurrency), min(args.requests, 2 * max(args.concurrency)))  # warm-up
                for concurrency in args.concurrency:
                    runs = [load(port, bodies, concurrency, args.requests) for _ in range(args.repeats)]
                    results["served"].setdefault(setting, {})[concurrency] = {
                        "requests_per_s": [rps for rps, _ in runs],
                        "latency_ms": {
                            f"p{q}": [1000 * float(np.percentile(lat, q)) for _, lat in runs] for q in (50, 95, 99)
                        },
                    }
            finally:
                stop_server(process)
    for setting, by_concurrency in results["served"].items():
        for concurrency, measured in by_concurrency.items():
            rps = statistics.median(measured["requests_per_s"])
            reference = statistics.median(results["in_process"][concurrency])
            latency = {q: statistics.median(v) for q, v in measured["latency_ms"].items()}
            rows.append([setting, str(concurrency), f"{rps:.1f}", f"{latency['p50']:.0f}", f"{latency['p95']:.0f}",
                         f"{latency['p99']:.0f}", f"{reference:.1f}", f"{rps / reference:.0%}"])  # fmt: skip
    header = ["server", "concurrency", "requests/s", "p50 ms", "p95 ms", "p99 ms", "in-process img/s (batch = "
              "concurrency)", "served / in-process"]  # fmt: skip
    print(table(header, rows))
    print(
        f"\nMachine: {machine()}; {args.model} at {args.image_size} px from an ONNX export; {args.requests} requests "
        f"per measurement, medians of {args.repeats}; clients on the same machine"
    )
    payload = {"model": args.model, "image_size": args.image_size, "requests": args.requests, **results}
    print(f"Wrote {write_json('serving', payload)}")


if __name__ == "__main__":
    main()
