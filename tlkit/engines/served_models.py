"""The model behind ``tlkit serve``: one request's files or texts in, the task's records out, from a checkpoint (the
strategy in torch, with the exact evaluation transform ``tlkit predict`` uses) or an export folder (ONNX Runtime or
TorchScript, with ``model.json``'s recipe). `load_served_model` chooses; `ServedModel` is what the server calls.

torch is imported where a model is loaded, not with this module: LitServe's HTTP process unpickles the server's API
(`tlkit.engines.serving`), and importing torch there would add seconds to every start.
"""

from __future__ import annotations

import io
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from tlkit.errors import ConfigError, config_error

#: What a served model reads: image files, texts, or sound files.
InputKind = Literal["images", "texts", "clips"]


class RequestError(ValueError):
    """A request the model cannot answer (not an image, too large, a wrong field): an HTTP 4xx with one line.

    Attributes:
        status: the HTTP status (400 bad input, 413 too large, 422 wrong fields).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Sample:
    """One decoded input, ready for the model: ``value`` (a transformed image tensor or array, a text, a waveform)
    and the original image's (width, height) when the task maps its outputs back onto it (masks, boxes)."""

    value: Any
    image_size: tuple[int, int] | None = None


def open_image(data: bytes, field: str) -> Image.Image:
    """An image file's bytes as a loaded PIL image; a `RequestError` naming ``field`` when they are not one."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Image.DecompressionBombError:
        limit = f"{Image.MAX_IMAGE_PIXELS:,}"
        message = f"Expected {field!r} to be an image of at most {limit} pixels, but it has more."
        raise RequestError(message, 413) from None
    except Image.UnidentifiedImageError:
        raise RequestError(
            f"Expected {field!r} to be an image file (PNG, JPEG, TIFF, BMP, WebP, ...), but it is not one."
        ) from None
    except (OSError, ValueError, SyntaxError) as err:  # a truncated or damaged file of a known format
        raise RequestError(f"Expected {field!r} to be a whole image file, but PIL cannot decode it ({err}).") from None
    return image


def open_clip(data: bytes, sample_rate: int, field: str) -> np.ndarray:
    """A sound file's bytes as tlkit reads a clip (mono, at ``sample_rate``); a `RequestError` naming ``field`` when
    they are not a sound file libsndfile decodes, or hold no samples."""
    import soundfile

    from tlkit.datamodules.audio_files import read_audio

    try:
        waveform = read_audio(io.BytesIO(data), sample_rate)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as err:
        raise RequestError(
            f"Expected {field!r} to be a sound file (WAV, FLAC, OGG, MP3), but it is not one ({err})."
        ) from None
    if waveform.size == 0:
        raise RequestError(f"Expected {field!r} to hold samples, but the sound file is empty.")
    return waveform


class ServedModel(ABC):
    """A model ready to answer requests: `decode` one input (raising `RequestError`), `predict` decoded samples in
    one batch, each answer a record in the task's form (the fields of ``tlkit predict``'s JSONL rows; a mask as a
    base64 PNG instead of a file)."""

    #: What the model reads, and so which request fields it takes.
    kind: InputKind
    #: The outputs' names (classes, labels, targets), as the prediction files name them.
    names: list[str]

    @abstractmethod
    def decode(self, data: bytes | str, field: str) -> Sample:
        """One request input (a file's bytes, or a text) as a sample."""

    @abstractmethod
    def predict(self, samples: list[Sample]) -> list[dict[str, Any]]:
        """The records of ``samples``, predicted as one batch."""

    def describe(self) -> dict[str, Any]:
        """What ``/info`` and the start-up line say about the model."""
        return {"inputs": self.kind, "task": self.task.name, "outputs": self.names}


def load_served_model(
    ckpt_path: str | os.PathLike | None, model_dir: str | os.PathLike | None, device: str = "cpu", top_k: int = 3
) -> ServedModel:
    """The model to serve: a checkpoint's strategy (``ckpt_path``) or an export folder (``model_dir``), on
    ``device``; one line naming the option when neither or both are given or the model cannot load."""
    if (ckpt_path is None) == (model_dir is None):
        raise ConfigError(
            "Expected exactly one of `ckpt_path` (a checkpoint) and `model_dir` (a `tlkit export` folder), but got "
            f"{'both' if ckpt_path else 'neither'}."
        )
    if ckpt_path is not None:
        return CheckpointModel(ckpt_path, device, top_k)
    return ExportedFolderModel(model_dir, device, top_k)


class CheckpointModel(ServedModel):
    """A checkpoint's strategy in torch: images through the evaluation transform ``tlkit predict`` applies (the
    whole image for dense tasks), texts through the backbone's tokenizer, clips decoded and resampled as in training;
    outputs from the strategy's own ``predict_step``."""

    def __init__(self, ckpt_path: str | os.PathLike, device: str = "cpu", top_k: int = 3) -> None:
        import torch

        from tlkit.engines.export import load_strategy

        self.model = load_strategy(ckpt_path).to(device)
        self.device, self.top_k = torch.device(device), top_k
        self.task = self.model.task
        backbone = self.model.backbone
        self.kind = "texts" if backbone.reads_text else "clips" if backbone.reads_audio else "images"
        from tlkit.callbacks.prediction_writer import output_names

        self.names = output_names(list(self.model.class_names or []), self.task.num_outputs)
        self.class_ids = self.model.class_ids
        if self.kind == "images":
            from tlkit.datamodules.dense import whole_image_transform
            from tlkit.datamodules.transforms import eval_transform

            config = self.model.trained_data_config or backbone.data_config
            self.transform = whole_image_transform(config) if self.task.reads_feature_maps else eval_transform(config)
        elif self.kind == "texts":
            from tlkit.checkpoint import read_checkpoint
            from tlkit.datamodules.text_datamodule import Tokenize

            # Texts are cut where the run's datamodule cut them (its `max_length`), at most the backbone's limit.
            data = read_checkpoint(ckpt_path).contents.get("datamodule_hyper_parameters") or {}
            config = backbone.data_config
            self.tokenize = Tokenize(config, min(data.get("max_length") or config.max_length, config.max_length))

    def decode(self, data: bytes | str, field: str) -> Sample:
        if self.kind == "texts":
            return Sample(data)
        if self.kind == "clips":
            import torch

            return Sample(torch.from_numpy(open_clip(data, self.model.backbone.data_config.sample_rate, field)))
        from tlkit.datamodules import to_rgb

        image = to_rgb(open_image(data, field))
        return Sample(self.transform(image), image.size)

    def predict(self, samples: list[Sample]) -> list[dict[str, Any]]:
        import torch

        with torch.inference_mode():
            return self._predict(samples)

    def _predict(self, samples: list[Sample]) -> list[dict[str, Any]]:
        import torch

        values = [sample.value for sample in samples]
        if self.kind == "texts":
            batch = {k: v.to(self.device) for k, v in self.tokenize([(text, 0) for text in values])[0].items()}
        elif self.kind == "clips":
            from tlkit.datamodules.audio import pad_waveforms

            batch = {k: v.to(self.device) for k, v in pad_waveforms(values).items()}
        else:
            batch = torch.stack(values).to(self.device)
        outputs = self.model.predict_step(batch, 0)
        return [
            self.task.response_record(_to_cpu(output), sample.image_size, self.names, self.class_ids, self.top_k)
            for output, sample in zip(outputs, samples)
        ]


def _to_cpu(output: Any) -> Any:
    if isinstance(output, dict):
        return {k: v.detach().cpu() for k, v in output.items()}
    return output.detach().float().cpu()


class ExportedFolderModel(ServedModel):
    """A `tlkit export` folder: ``model.onnx`` in ONNX Runtime (else ``model.ts`` in TorchScript) with
    ``model.json``'s preprocessing, task and class names, as code without tlkit would run it."""

    def __init__(self, model_dir: str | os.PathLike, device: str = "cpu", top_k: int = 3) -> None:
        from tlkit.engines.model_spec import read_model_spec
        from tlkit.tasks import Task

        folder = Path(model_dir).expanduser()
        self.spec = spec = read_model_spec(folder)
        self.names, self.class_ids, self.top_k = list(spec.class_names), spec.class_ids, top_k
        self.task = Task.from_description(spec.task, len(self.names))
        if not self.task.exports_predictions:
            raise config_error(
                "model_dir",
                f"an export whose outputs are the task's predictions ({self.task.name}'s export needs its caller's "
                "post-processing: serve its checkpoint with --ckpt_path instead)",
                str(folder),
            )
        self.kind = "clips" if "sample_rate" in spec.preprocessing else "images"
        self.run = _runtime(folder, spec, device)

    def decode(self, data: bytes | str, field: str) -> Sample:
        if self.kind == "clips":
            return Sample(open_clip(data, self.spec.preprocessing["sample_rate"], field))
        from tlkit.engines.preprocessing import preprocess

        image = open_image(data, field)
        return Sample(preprocess(image, self.spec.preprocessing), image.size)

    def predict(self, samples: list[Sample]) -> list[dict[str, Any]]:
        values = [sample.value for sample in samples]
        if self.kind == "clips":
            from tlkit.engines.audio_preprocessing import pad_clips

            feeds = pad_clips(values)
        else:
            feeds = {"images": np.stack(values)}
        import torch

        outputs = torch.from_numpy(np.asarray(self.run(feeds)))
        return [
            self.task.response_record(output, sample.image_size, self.names, self.class_ids, self.top_k)
            for output, sample in zip(outputs, samples)
        ]


def _runtime(folder: Path, spec: Any, device: str) -> Any:
    """A function from the input feeds to the model's output: ONNX Runtime when the folder holds ONNX (on the GPU
    when ``device`` is one and the installed onnxruntime has CUDA), else TorchScript."""
    if "onnx" in spec.files:
        import onnxruntime

        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        session = onnxruntime.InferenceSession(str(folder / spec.files["onnx"]), providers=providers)
        return lambda feeds: session.run(None, feeds)[0]
    if "torchscript" in spec.files:
        import torch

        module = torch.jit.load(str(folder / spec.files["torchscript"]), map_location=device).eval()
        names = ["waveform", "lengths"] if "sample_rate" in spec.preprocessing else ["images"]

        def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
            with torch.inference_mode():
                return module(*(torch.from_numpy(feeds[name]).to(device) for name in names)).cpu().numpy()

        return run
    raise config_error("model_dir", "an export folder with model.onnx or model.ts", str(folder))
