"""Shipping an adapted model: ONNX and TorchScript files of backbone + head + the task's post-processing (class or
label probabilities, or regression values in their units), a JSON with the preprocessing, the names and the task's
fitted state, and a verification against the checkpoint on real images or recordings (the task judges it:
`Task.check_export`).

The JSON (`tlkit.engines.model_spec.ModelSpec`) is all a deployment needs besides the model file: resize the shorter
side to ``resize`` (PIL, with the named interpolation), centre-crop ``crop`` x ``crop``, divide by 255, normalise with
``mean``/``std``, NCHW float32. `tlkit.engines.preprocessing.preprocess` does exactly that with PIL and numpy, and
verification feeds the exported model through it, so the file's recipe is checked along with the model. An audio
model reads waveforms (``waveform`` (N, samples) at the JSON's ``sample_rate``, ``lengths`` (N,)) with its front end
inside the graph: `tlkit.engines.audio_preprocessing` is its recipe.

Examples:
    >>> report = export("logs/digits_finetune/version_0/checkpoints/last.ckpt", "exported/digits")
    >>> report.max_difference
    {'onnx': 2.4e-07, 'torchscript': 0.0}
    >>> report.checks["onnx"].criterion
    '|difference| <= 0.0001 + 0.001 x |value|, and the same top class'
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

import tlkit
from tlkit.backbones import DataConfig
from tlkit.checkpoint import class_path, import_class, read_checkpoint
from tlkit.engines.audio_preprocessing import audio_preprocessing_spec, pad_clips, read_clip, verification_clips
from tlkit.engines.model_spec import FORMAT_VERSION, SPEC_FILE, ModelSpec
from tlkit.engines.preprocessing import preprocess, preprocessing_spec, verification_images
from tlkit.errors import ConfigError, config_error
from tlkit.input_config import AudioConfig
from tlkit.tasks.export_check import ExportCheck

ExportFormat = Literal["onnx", "torchscript"]
FORMATS: tuple[ExportFormat, ...] = ("onnx", "torchscript")
FILES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}


class VerificationError(ConfigError):
    """The exported model does not reproduce the checkpoint's outputs as its task requires (`Task.check_export`)."""


class ExportedModel(nn.Module):
    """Backbone + head + the task's post-processing (`Task.postprocess`): images (N, 3, H, W) to what ``tlkit
    predict`` returns, (N, outputs): class probabilities (softmax of the logits divided by the fitted temperature, 1
    without temperature scaling), label probabilities (a sigmoid per label, the same temperature), or regression
    values in the targets' units. Nothing else of the strategy (a domain discriminator, a frozen copy) is part of it.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, task: nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        self.backbone, self.head, self.task = backbone, head, task
        self.register_buffer("temperature", torch.tensor(temperature, dtype=torch.float32))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.task.backbone_features(self.backbone, images)
        return self.task.export_outputs(self.head(features), self.temperature)


class ExportedAudioModel(ExportedModel):
    """`ExportedModel` over waveforms: (N, samples) float32 at the backbone's rate, zero-padded to the longest clip,
    with each clip's length in samples (N,) int64; the backbone's front end (volume, spectrogram, normalisation) runs
    inside, so padding does not change a clip's output."""

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward({"waveform": waveform, "lengths": lengths})


@dataclass
class ModelInputs:
    """What an export feeds its model, for its kind of input: the inputs' names, an example to trace, which
    dimensions vary, the verification samples read as tlkit trains (``eager``) and as model.json's recipe says
    (``feeds``), and the recipe and input description model.json records."""

    names: list[str]
    example: tuple[torch.Tensor, ...]
    dynamic_shapes: tuple[dict[int, Any], ...]
    eager: tuple[torch.Tensor, ...]
    feeds: dict[str, np.ndarray]
    samples: int
    kind: str
    preprocessing: dict[str, Any]
    description: dict[str, Any]


def image_inputs(config: DataConfig, images: str | os.PathLike | None, whole_image: bool) -> ModelInputs:
    """Images (N, 3, crop, crop): verified on real photos in every mode tlkit reads (or ``images``)."""
    from tlkit.datamodules import to_rgb
    from tlkit.datamodules.dense import whole_image_transform
    from tlkit.datamodules.transforms import eval_transform

    spec = preprocessing_spec(config, whole_image=whole_image)
    samples = verification_images(images)
    transform = whole_image_transform(config) if whole_image else eval_transform(config)
    crop = spec["crop"]
    return ModelInputs(
        names=["images"],
        example=(torch.zeros(2, 3, config.image_size, config.image_size),),
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
        eager=(torch.stack([transform(to_rgb(image)) for image in samples]),),
        feeds={"images": np.stack([preprocess(image, spec) for image in samples])},
        samples=len(samples),
        kind="images",
        preprocessing=spec,
        description={"name": "images", "shape": ["batch", 3, crop, crop], "dtype": "float32"},
    )


def audio_inputs(config: AudioConfig, clips: str | os.PathLike | None) -> ModelInputs:
    """Waveforms and lengths: verified on the recorded voices tlkit ships (or the clips under ``clips``), batched
    at their own lengths, so padding is part of the check."""
    from tlkit.datamodules.audio import AudioClips, pad_waveforms
    from tlkit.datamodules.datasets import Split

    spec = audio_preprocessing_spec(config)
    paths = verification_clips(clips)
    read = AudioClips(Split([str(path) for path in paths], [0] * len(paths)), config.sample_rate)
    eager, _ = pad_waveforms([read[i] for i in range(len(read))])
    batch, samples = torch.export.Dim("batch", min=1), torch.export.Dim("samples", min=config.sample_rate // 10)
    one_second = config.sample_rate
    return ModelInputs(
        names=["waveform", "lengths"],
        example=(torch.zeros(2, one_second), torch.tensor([one_second, one_second // 2])),
        dynamic_shapes=({0: batch, 1: samples}, {0: batch}),
        eager=(eager["waveform"], eager["lengths"]),
        feeds=pad_clips([read_clip(path, spec) for path in paths]),
        samples=len(paths),
        kind="clips",
        preprocessing=spec,
        description={
            "name": "waveform",
            "shape": ["batch", "samples"],
            "dtype": "float32",
            "lengths": {"name": "lengths", "shape": ["batch"], "dtype": "int64"},
        },
    )


@dataclass
class ExportReport:
    """What `export` wrote and how closely each format reproduced the checkpoint."""

    directory: Path
    files: dict[str, Path]
    max_difference: dict[str, float] = field(default_factory=dict)
    #: Each format's verification as its task judged it: the largest differences, the criterion, any problem.
    checks: dict[str, ExportCheck] = field(default_factory=dict)
    #: How many real samples it was verified on, and what they were (``images`` or ``clips``).
    images: int = 0
    kind: str = "images"


# ------------------------------------------------------------------------------------------------------- loading
def load_strategy(checkpoint_path: str | os.PathLike) -> Any:
    """The tlkit strategy stored in a checkpoint, on the CPU, in eval mode (weights from the file, no download)."""
    checkpoint = read_checkpoint(checkpoint_path, "ckpt_path")
    if checkpoint.info is None or not checkpoint.info.strategy:
        raise config_error("ckpt_path", "a checkpoint written by a tlkit strategy (`tlkit fit`)", str(checkpoint.path))
    strategy = import_class(checkpoint.info.strategy)
    if strategy is None:
        raise config_error("ckpt_path", "a checkpoint whose strategy class imports here", checkpoint.info.strategy)
    # `weights: null`: every weight comes from the checkpoint, so nothing is downloaded or read from elsewhere; an
    # adapter-only checkpoint has its frozen pretrained weights rebuilt from the run's `weights` (and checked). A
    # strategy without a `weights` argument (SHOT: its weights come from a source checkpoint) builds without any.
    takes_weights = "weights" in checkpoint.hyper_parameters
    adapter_only = checkpoint.info.pretrained_fingerprint is not None
    overrides = {"weights": None} if takes_weights and not adapter_only else {}
    model = strategy.load_from_checkpoint(checkpoint.path, map_location="cpu", weights_only=True, **overrides)
    return model.eval()


# ------------------------------------------------------------------------------------------------------ exporting
def export(
    checkpoint_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    formats: Sequence[ExportFormat] = FORMATS,
    images: str | os.PathLike | None = None,
    opset: int = 18,
    tolerance_scale: float = 1.0,
) -> ExportReport:
    """Export a tlkit checkpoint's backbone + head to ``formats`` in ``out_dir`` with its ``model.json``, and verify.

    Args:
        checkpoint_path: a checkpoint of any tlkit strategy.
        out_dir: a new or empty folder (an existing export is never overwritten).
        formats: ``onnx`` (dynamic batch size, for onnxruntime) and/or ``torchscript``.
        images: a folder of real images (or, for an audio model, clips) to verify on (default: bundled photos and
            digits, or the recorded voices tlkit ships).
        opset: the ONNX opset.
        tolerance_scale: a factor on the task's tolerance (`Task.export_tolerance`): above 1 to accept a runtime
            whose kernels round differently, below 1 to demand more.

    Raises:
        ConfigError: bad input (not a tlkit checkpoint, an unknown format, an unwritable or non-empty folder).
        VerificationError: an exported model does not reproduce the checkpoint as its task requires: outputs
            outside the tolerance, or another top class, label set, box or mask.
    """
    for name in formats:
        if name not in FORMATS:
            raise config_error("formats", "a list of export formats", name, options=FORMATS)
    if not formats:
        raise config_error("formats", "at least one export format", list(formats), options=FORMATS)
    if not tolerance_scale > 0:
        raise config_error("tolerance_scale", "a number > 0", tolerance_scale)
    directory = Path(out_dir).expanduser()
    _check_directory(directory)
    model = load_strategy(checkpoint_path)
    created = not directory.exists()
    _prepare_directory(directory)
    try:
        return _export_into(directory, model, formats, images, opset, tolerance_scale)
    except VerificationError:
        raise  # its files stay for inspection, as its message says
    except BaseException:
        # The folder was new or empty: a failed export leaves it as it was (an interrupted one included).
        if created:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            for path in directory.iterdir():
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        raise


def _export_into(
    directory: Path,
    model: Any,
    formats: Sequence[ExportFormat],
    images: str | os.PathLike | None,
    opset: int,
    tolerance_scale: float,
) -> ExportReport:
    model.backbone.merge_adapter()  # adapters folded into the weights: a plain network, as fast as the original
    temperature = float(model.calibration_temperature)
    if model.backbone.reads_audio:
        inputs = audio_inputs(model.backbone.data_config, images)
        network: ExportedModel = ExportedAudioModel(model.backbone, model.head, model.task, temperature).eval()
    else:
        config = model.trained_data_config or model.backbone.data_config
        inputs = image_inputs(config, images, whole_image=model.task.reads_feature_maps)
        network = ExportedModel(model.backbone, model.head, model.task, temperature).eval()
    with torch.inference_mode():
        expected = network(*inputs.eager).numpy()
    report = ExportReport(directory, {}, images=inputs.samples, kind=inputs.kind)
    for name in formats:
        path = directory / FILES[name]
        if name == "onnx":
            run = _export_onnx(network, path, opset, inputs)
        else:
            run = _export_torchscript(network, path, inputs)
        report.files[name] = path
        check = model.task.check_export(run(inputs.feeds), expected, tolerance_scale)
        report.checks[name], report.max_difference[name] = check, check.max_abs_difference
        if not check.passed:
            where = ""
            if name == "onnx" and inputs.names == ["images"]:
                where = f" {locate_divergence(network.backbone, inputs.eager[0], opset)}."
            raise VerificationError(
                f"Expected the {name} export to reproduce the checkpoint's outputs ({check.criterion}) on "
                f"{inputs.samples} {inputs.kind}, but {check.problem}; largest |difference| "
                f"{check.max_abs_difference:.3g} (relative {check.max_rel_difference:.3g}).{where} The files are left "
                f"in {str(directory)!r} for inspection."
            )
    report.files["spec"] = directory / SPEC_FILE
    report.files["spec"].write_text(_spec_document(model, inputs, report).to_json())
    return report


def _check_directory(directory: Path) -> None:
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise config_error("out_dir", "a new or empty folder (an earlier export is never overwritten)", str(directory))


def _prepare_directory(directory: Path) -> Path:
    """Create ``directory`` (checked by `_check_directory` before the checkpoint was loaded) and probe it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise config_error("out_dir", f"a folder tlkit can write to ({err.strerror})", str(directory)) from err
    return directory


class _GroupOutputs(nn.Module):
    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.backbone.group_outputs(images))


def locate_divergence(backbone: nn.Module, images: torch.Tensor, opset: int = 18, tolerance: float = 1e-3) -> str:
    """Where an ONNX export departs from eager PyTorch: the first layer group whose (pooled) output differs by more
    than ``tolerance`` relative to its magnitude, and the ONNX operators exported from that group's modules."""
    import onnx

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "groups.onnx"
        session = _onnx_session(_GroupOutputs(backbone).eval(), (images,), ["images"], path, opset)
        exported = session.run(None, {"images": images.numpy()})
        graph = onnx.load(str(path)).graph
    with torch.no_grad():
        eager = [output.numpy() for output in backbone.group_outputs(images)]
    for group, ours, theirs in zip(backbone.layer_groups, eager, exported):
        relative = float(np.abs(theirs - ours).max() / max(float(np.abs(ours).max()), 1e-12))
        if relative > tolerance:
            operators = sorted(_group_operators(graph, group))
            return (
                f"the first layer group whose output differs is {group.name!r} (relative |difference| "
                f"{relative:.2g}); its ONNX operators: {', '.join(operators) or 'none found'}"
            )
    return "every backbone layer group agrees, so the difference arises in the head or the softmax"


def _group_operators(graph: Any, group: Any) -> set[str]:
    """The op types of the exported nodes that come from the group's modules (by the exporter's name-scope metadata)."""
    modules = {name.rpartition(".")[0] for name in group.parameter_names} | {group.output_module}
    prefixes = tuple(f"'backbone.model.{module}" for module in modules)
    operators = set()
    for node in graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
        if any(f"{prefix}'" in scopes or f"{prefix}." in scopes for prefix in prefixes):
            operators.add(node.op_type)
    return operators


def _export_onnx(network: nn.Module, path: Path, opset: int, inputs: ModelInputs):
    try:
        import onnxruntime  # noqa: F401 (verification runs it)
        import onnxscript  # noqa: F401 (torch's ONNX exporter needs it)
    except ImportError as err:
        raise config_error(
            "formats", "formats whose packages are installed (ONNX: pip install 'tlkit[export]')", "onnx"
        ) from err
    output = [network.task.output_name]
    session = _onnx_session(network, inputs.example, inputs.names, path, opset, output, inputs.dynamic_shapes)
    return lambda feeds: session.run(None, feeds)[0]


def _onnx_session(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    input_names: list[str],
    path: Path,
    opset: int,
    output_names=None,
    dynamic_shapes=None,
) -> Any:
    """Export ``module`` to a self-contained ONNX file and open it in onnxruntime on the CPU."""
    import onnxruntime

    # torch.export unrolls a recurrent layer frame by frame (minutes, and thousands of nodes for a 1 s clip); the
    # TorchScript-based exporter writes ONNX's own LSTM/GRU operator, for any number of frames.
    recurrent = any(isinstance(layer, nn.RNNBase) for layer in module.modules())
    if recurrent and dynamic_shapes is not None:
        named = zip(input_names, dynamic_shapes)
        axes = {name: {dim: shape.__name__ for dim, shape in dims.items()} for name, dims in named}
        options: dict[str, Any] = {"dynamo": False, "dynamic_axes": axes}
    else:
        options = {"dynamo": not recurrent, "dynamic_shapes": dynamic_shapes, "external_data": False}
    # The exporter narrates its passes on stdout; the export's own report says what matters.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        # The TorchScript-based exporter's notes on constant folding, advanced indexing and LSTM batch sizes: the
        # verification that follows runs the file at other batch sizes and clip lengths, which is what they warn of.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx\._internal\.torchscript_exporter")
        # external_data=False (dynamo): one self-contained file; the exporter otherwise puts the weights beside it.
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=input_names,
            output_names=output_names,
            opset_version=opset,
            verbose=False,
            **options,
        )
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _export_torchscript(network: nn.Module, path: Path, inputs: ModelInputs):
    # torch marks TorchScript deprecated in favour of torch.export; the format still loads in C++ and older runtimes,
    # which is why users ask for it. ONNX is the recommended format.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        with torch.no_grad():
            traced = torch.jit.trace(network, inputs.example, check_trace=False)
        traced.save(str(path))
        loaded = torch.jit.load(str(path), map_location="cpu").eval()

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return loaded(*(torch.from_numpy(feeds[name]) for name in inputs.names)).numpy()

    return run


def _spec_document(model: Any, inputs: ModelInputs, report: ExportReport) -> ModelSpec:
    checks = report.checks
    return ModelSpec(
        format_version=FORMAT_VERSION,
        files={name: path.name for name, path in report.files.items() if name != "spec"},
        input=inputs.description,
        output={"name": model.task.output_name, "shape": model.task.export_shape(inputs.preprocessing.get("crop"))},
        preprocessing=inputs.preprocessing,
        class_names=model.class_names or [str(i) for i in range(model.num_classes)],
        class_ids=model.class_ids,
        temperature=float(model.calibration_temperature),
        task=model.task.describe(),
        strategy=class_path(type(model)),
        backbone=model.backbone.name,
        verification={
            inputs.kind: report.images,
            "max_abs_difference": report.max_difference,
            "max_rel_difference": {name: check.max_rel_difference for name, check in checks.items()},
            "criterion": next(iter(checks.values())).criterion if checks else None,
        },
        versions={"tlkit": tlkit.__version__, "torch": torch.__version__, "python": platform.python_version()},
    )
