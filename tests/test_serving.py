"""``tlkit serve``: the real server (LitServe) started by the console script on a free localhost port, called over
HTTP as a user's client calls it; its answers are ``tlkit predict``'s for the same files."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from tests._console import REPO, TINY_IMAGE_MODEL, run_here, run_here_captured, shipped, start_tlkit
from tests._snippets import page_snippet

#: How long a server may take to answer /health after it starts (two worker processes import torch on 2 cores).
START_SECONDS = 90


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def call(url: str, body: bytes | None = None, content_type: str = "application/json") -> tuple[int, Any]:
    """POST ``body`` (GET without one) to ``url``: the status and the decoded JSON answer."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type} if body else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def post_json(base: str, payload: Any) -> tuple[int, Any]:
    return call(f"{base}/predict", json.dumps(payload).encode())


def post_files(base: str, files: list[tuple[str, bytes]]) -> tuple[int, Any]:
    """A multipart form with each file in the field ``file``, as ``curl -F file=@...`` sends it."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, data in files
    ]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return call(f"{base}/predict", body, f"multipart/form-data; boundary={boundary}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def served_run(tmp_path_factory) -> dict[str, Any]:
    """The shipped digits config fitted briefly; a folder of a user's images in the modes their tools write; what
    ``tlkit predict`` wrote for them; and the checkpoint exported."""
    folder = tmp_path_factory.mktemp("served")
    short = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]
    run_here([*shipped("digits_finetune.yaml", *TINY_IMAGE_MODEL), *short], folder)
    checkpoint = folder / "logs" / "digits_finetune" / "version_0" / "checkpoints" / "last.ckpt"
    images = folder / "images"
    images.mkdir()
    digits = load_digits()
    for i in range(6):
        image = Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8)).resize((48, 40))
        [image.convert("RGB").save, image.save, image.convert("RGBA").save][i % 3](images / f"d{i}.png")
    Image.fromarray((digits.images[6] * 4095).astype(np.uint16)).save(images / "scan16.png")  # 16-bit greyscale
    Image.fromarray((digits.images[7] * 255 / 16).astype(np.uint8)).convert("RGB").save(images / "d7.jpg", quality=90)
    run_here(["predict", "--ckpt_path", str(checkpoint), f"--data.predict_dir={images}"], folder)
    rows = folder / "logs" / "digits_finetune" / "version_0" / "predictions" / "predictions-last.jsonl"
    predicted = {Path(row["file"]).name: row for row in map(json.loads, rows.read_text().splitlines())}
    exported = folder / "exported"
    run_here(["export", "--ckpt_path", str(checkpoint), f"--out_dir={exported}", "--formats=[onnx]"], folder)
    files = {path.name: path.read_bytes() for path in sorted(images.iterdir())}
    assert predicted.keys() == files.keys()
    return {"folder": folder, "checkpoint": checkpoint, "exported": exported, "files": files, "predicted": predicted}


@pytest.fixture()
def serving() -> Iterator[Any]:
    """Start ``tlkit serve <args>`` in a folder; every server started is stopped (with its workers) at the end."""
    started: list[subprocess.Popen] = []

    def start(args: list[str], folder: Path) -> str:
        port = free_port()
        log = (folder / f"serve-{port}.log").open("w")
        process = start_tlkit(["serve", *args, f"--port={port}"], folder, log, subprocess.STDOUT)
        started.append(process)
        base, deadline = f"http://127.0.0.1:{port}", time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            assert process.poll() is None, (folder / f"serve-{port}.log").read_text()[-3000:]
            try:
                if urllib.request.urlopen(f"{base}/health", timeout=5).read() == b"ok":
                    return base
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"tlkit serve did not answer /health within {START_SECONDS} s")

    yield start
    for process in started:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def without_file(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key != "file"}


def assert_same_answer(got: dict[str, Any], expected: dict[str, Any], tolerance: float) -> None:
    """The same class and top-k order; every probability within ``tolerance`` (another batch, or ONNX Runtime)."""
    assert got.keys() == without_file(expected).keys()
    assert got["prediction"] == expected["prediction"]
    assert [t["class"] for t in got["top_k"]] == [t["class"] for t in expected["top_k"]]
    assert abs(got["probability"] - expected["probability"]) <= tolerance
    for mine, theirs in zip(got["top_k"], expected["top_k"]):
        assert abs(mine["probability"] - theirs["probability"]) <= tolerance


def test_a_served_checkpoint_answers_as_predict_does_for_the_same_files(served_run, serving):
    base = serving(["--ckpt_path", str(served_run["checkpoint"])], served_run["folder"])
    files, predicted = served_run["files"], served_run["predicted"]
    for name, data in files.items():  # one file per request, as a form upload and as base64 JSON
        status, answer = post_files(base, [(name, data)])
        assert status == 200, answer
        assert_same_answer(answer, predicted[name], 1e-5)
        assert post_json(base, {"image": b64(data)}) == (200, answer)
    # A list in one request, answered in its order; several files in one form likewise.
    names = list(files)
    status, answer = post_json(base, {"images": [b64(files[n]) for n in names]})
    assert status == 200 and len(answer["predictions"]) == len(names)
    for name, got in zip(names, answer["predictions"]):
        assert_same_answer(got, predicted[name], 1e-5)
    status, answer = post_files(base, [(n, files[n]) for n in names[:3]])
    assert status == 200 and [a["prediction"] for a in answer["predictions"]] == [
        predicted[n]["prediction"] for n in names[:3]
    ]
    # The service describes itself: health, the model's task and outputs, and the OpenAPI page LitServe gives.
    assert urllib.request.urlopen(f"{base}/health", timeout=10).read() == b"ok"
    status, info = call(f"{base}/info")
    assert status == 200 and info["model"]["task"] == "classification" and info["model"]["outputs"][0] == "0"
    status, openapi = call(f"{base}/openapi.json")
    assert status == 200 and "/predict" in openapi["paths"]
    # The Serving page's curl line and Python client, run as written against this server.
    folder, names = served_run["folder"], ["d0.png", "scan16.png", "d7.jpg"]
    page = (REPO / "docs" / "serving.md").read_text()
    start = page.index("```bash\n", page.index("<!-- serve-curl -->")) + len("```bash\n")
    curl = page[start : page.index("```", start)].strip().replace("photo.jpg", "images/d7.jpg")
    printed = subprocess.run(
        curl.replace(":8000", f":{base.rsplit(':', 1)[1]}"),
        shell=True,
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    shown = json.loads(page[page.index("```json\n", start) + len("```json\n") :].split("```", 1)[0])
    answer = json.loads(printed)
    assert answer.keys() == shown.keys() and answer["prediction"] == predicted["d7.jpg"]["prediction"]
    (folder / "client.py").write_text(page_snippet("serving.md", "serve-client-snippet"))
    paths = [f"images/{name}" for name in names]
    printed = subprocess.run(
        [sys.executable, "client.py", base, *paths], cwd=folder, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert [line.split()[:2] for line in printed] == [[p, predicted[n]["prediction"]] for p, n in zip(paths, names)]


def test_an_export_folder_served_with_batching_answers_concurrent_clients_each_their_own(served_run, serving):
    """ONNX Runtime behind the server, requests gathered into batches: 32 requests from 8 clients at once each get
    the answer to their own file, and bad requests in the same batches get their 4xx alone."""
    args = ["--model_dir", str(served_run["exported"]), "--max_batch_size=8", "--batch_timeout=0.05"]
    base = serving([*args, "--max_request_mb=1", "--max_items=4"], served_run["folder"])
    files, predicted = served_run["files"], served_run["predicted"]
    names = [name for _ in range(4) for name in files]
    bad: list[tuple[Any, int, str]] = [
        ({"image": "not base64!"}, 400, "Expected 'image' to be a base64-encoded file"),
        ({"image": b64(b"%PDF-1.4 not an image")}, 400, "Expected 'image' to be an image file"),
        ({"image": b64(files["d0.png"][:60])}, 400, "Expected 'image' to be a whole image file"),
        ({"text": "a text"}, 422, "Expected a JSON object with 'image'"),
        ({"images": []}, 422, "Expected 'images' to be a non-empty list, but got an empty list"),
        ({"images": [b64(files["d0.png"])] * 5}, 413, "Expected at most 4 inputs per request, but got 5"),
        ({"image": b64(os.urandom(2 * 2**20))}, 413, "Expected a request of at most 1 MB (--max_request_mb)"),
    ]

    def request(job: Any) -> tuple[int, Any]:
        return post_json(base, {"image": b64(files[job])} if isinstance(job, str) else job[0])

    jobs: list[Any] = [*names, *bad]
    order = np.random.default_rng(0).permutation(len(jobs))
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as clients:
        answers = dict(zip(order, clients.map(request, [jobs[i] for i in order])))
    assert time.monotonic() - started < 60
    for index, (status, answer) in answers.items():
        job = jobs[index]
        if isinstance(job, str):
            assert status == 200, answer
            assert_same_answer(answer, predicted[job], 1e-4)  # ONNX Runtime's kernels against torch's
        else:
            assert status == job[1] and answer["detail"].startswith(job[2]), (job[1:], status, answer)
            assert "\n" not in answer["detail"] and "Traceback" not in answer["detail"]
    # Not JSON at all; and the server still answers after every bad request.
    status, answer = call(f"{base}/predict", b"image=not json", "text/plain")
    assert status == 400 and answer["detail"].startswith("Expected the request body to be JSON or a multipart form")
    status, answer = post_json(base, {"image": b64(files["d1.png"])})
    assert status == 200 and answer["prediction"] == predicted["d1.png"]["prediction"]


def test_a_model_that_cannot_load_stops_the_command_in_one_line(served_run, tmp_path, capfd):
    cases = [
        (["--ckpt_path", str(tmp_path / "missing.ckpt")], "missing.ckpt"),
        (["--model_dir", str(tmp_path)], "model.json"),
        (["--ckpt_path", str(served_run["checkpoint"]), "--model_dir", str(served_run["exported"])], "both"),
        ([], "neither"),
        (["--ckpt_path", str(served_run["checkpoint"]), "--max_batch_size=0"], "max_batch_size"),
    ]
    for args, named in cases:
        done = run_here_captured(["serve", *args], tmp_path, capfd)
        lines = done.stderr.strip().splitlines()  # the error, and how to see its traceback
        assert done.returncode == 2 and len(lines) == 2 and named in lines[0], (args, done.stderr[-2000:])
        assert lines[0].startswith("tlkit serve: error: Expected") and "TLKIT_TRACEBACK=1" in lines[1], lines


def test_a_text_model_answers_texts_as_predict_does_cut_where_its_run_cut_them(tiny_bert, tmp_path):
    from tlkit.datamodules import RottenTomatoesDataModule
    from tlkit.engines.served_models import load_served_model
    from tlkit.engines.serving import parse_request

    fit = shipped("text_finetune.yaml", f"--model.init_args.backbone=hf:{tiny_bert}", "--data.init_args.max_length=8")
    short = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]
    run_here([*fit, *short], tmp_path)
    run = tmp_path / "logs" / "text_finetune" / "version_0"
    run_here(["predict", "--ckpt_path", str(run / "checkpoints" / "last.ckpt")], tmp_path)
    rows = [json.loads(line) for line in next(run.glob("predictions/*.jsonl")).read_text().splitlines()]
    data = RottenTomatoesDataModule(labels_per_class=100, max_length=8)
    data.setup("test")
    texts = data.splits["test"].samples
    assert len(rows) == len(texts) and any(len(text.split()) > 8 for text in texts)  # some are cut at 8 tokens
    served = load_served_model(run / "checkpoints" / "last.ckpt", None)
    assert served.kind == "texts"
    request = parse_request({"texts": texts}, served, max_items=len(texts))
    assert request.many and [sample.value for sample in request.samples] == texts
    for row, answer in zip(rows, served.predict(request.samples)):
        assert answer["prediction"] == row["prediction"] and abs(answer["probability"] - row["probability"]) < 1e-5
    with pytest.raises(ValueError, match="Expected 'texts\\[1\\]' to be a string, but got int"):
        parse_request({"texts": ["good", 3]}, served, max_items=8)
