"""`AudioDataModule`: labelled audio clips for an audio backbone, at the backbone's sample rate.

Clips are split like images and texts (seeded, stratified, limited-label options). A training clip longer than the
backbone's ``max_seconds`` is cropped at a random place, its volume changed and (``noise_snr_db``) noise added, all
at random (``augment``); evaluation and prediction read each clip whole. A batch is padded to its longest clip and
carries each clip's length: ``{"waveform": (N, T), "lengths": (N,)}``. The sample rate and the crop come from the
attached model's `DataRequest` (an `AudioConfig`), so the datamodule needs no model name of its own. Every file is
checked (its header) at setup: an unreadable or empty one is one line naming it, before training.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, Dataset, default_collate

from tlkit.backbones import AudioConfig, TextConfig
from tlkit.data_request import DataRequest, Features
from tlkit.datamodules._attached import model_request
from tlkit.datamodules._labelled_data import LabelledData, check_label_limits, check_split_arguments
from tlkit.datamodules._served_features import FeatureServingSlot
from tlkit.datamodules.audio_files import audio_problem, read_audio
from tlkit.datamodules.datasets import Split
from tlkit.datamodules.folders import check_folder, class_folders
from tlkit.datamodules.sampling import ResumableTrainLoaders
from tlkit.errors import ConfigError, config_error, refuse_base_class
from tlkit.features import data_fingerprint
from tlkit.randomness import sample_seed, seeded


class AudioClips(Dataset):
    """(waveform, label) pairs of a `Split` of clips read by ``load`` (a sample and a rate to a mono float32
    waveform at that rate; default: an audio file's path), at ``sample_rate``; with ``crop_samples`` (training), a
    clip longer than that is cropped at a random place, its gain changed by up to ``gain_db``, and with
    ``noise_snr_db`` white noise added at a signal-to-noise ratio drawn between its two bounds."""

    def __init__(
        self,
        split: Split,
        sample_rate: int,
        crop_samples: int | None = None,
        gain_db: float = 0.0,
        load: Callable[[Any, int], np.ndarray] = read_audio,
        noise_snr_db: tuple[float, float] | None = None,
    ) -> None:
        self.split, self.sample_rate, self.crop_samples, self.gain_db = split, sample_rate, crop_samples, gain_db
        self.load, self.noise_snr_db = load, noise_snr_db

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        waveform = self.load(self.split.samples[index], self.sample_rate)
        with seeded(sample_seed(index)):  # a training index carries its augmentation's seed
            waveform = self.augment(waveform)
        return torch.from_numpy(np.ascontiguousarray(waveform)), self.split.labels[index]

    def augment(self, waveform: np.ndarray) -> np.ndarray:
        """``waveform`` cropped, its gain changed and noise added as configured (none for evaluation), drawing
        from numpy's global generator (seeded by the caller)."""
        if self.crop_samples is None:
            return waveform
        if len(waveform) > self.crop_samples:
            start = np.random.randint(0, len(waveform) - self.crop_samples + 1)
            waveform = waveform[start : start + self.crop_samples]
        if self.gain_db:
            waveform = waveform * np.float32(10 ** (np.random.uniform(-self.gain_db, self.gain_db) / 20))
        if self.noise_snr_db is not None:
            waveform = with_noise(waveform, np.random.uniform(*self.noise_snr_db))
        return waveform


class UnlabelledClips(Dataset):
    """Target clips without their labels (so no strategy can use them by accident), each read once and served in
    one or more views (`AudioClips` over the same split, each with its own augmentation; one seed for all views:
    the draws continue from view to view); with ``with_index``, each sample is ``(views, index)``: its position in
    the split."""

    def __init__(self, views: list[AudioClips], with_index: bool = False) -> None:
        self.views, self.with_index = views, with_index

    def __len__(self) -> int:
        return len(self.views[0])

    def __getitem__(self, index: int) -> Any:
        first = self.views[0]
        waveform = first.load(first.split.samples[index], first.sample_rate)
        with seeded(sample_seed(index)):
            views = [torch.from_numpy(np.ascontiguousarray(view.augment(waveform))) for view in self.views]
        sample = views[0] if len(views) == 1 else views
        return (sample, index) if self.with_index else sample


def with_noise(waveform: np.ndarray, snr_db: float) -> np.ndarray:
    """``waveform`` with white Gaussian noise added at ``snr_db`` decibels below the clip's mean power."""
    power = float(np.mean(np.square(waveform, dtype=np.float64))) if len(waveform) else 0.0
    scale = np.sqrt(power / 10 ** (snr_db / 10))
    return (waveform + np.random.standard_normal(len(waveform)) * scale).astype(np.float32)


def pad_waveforms(samples: list[Any]) -> Any:
    """Collate clips into ``{"waveform": (N, T), "lengths": (N,)}``, each clip padded with silence to the batch's
    longest: (waveform, label) samples into ``(clips, labels)``; unlabelled waveforms into clips, a list of views into
    a list of clips per view, ``(views, index)`` into ``(clips, indices)``. Samples served as cached `Features` are
    collated as they are."""
    first = samples[0]
    if isinstance(first, tuple):
        if isinstance(first[0], Features):
            return default_collate(samples)
        return _pad_views([sample[0] for sample in samples]), default_collate([sample[1] for sample in samples])
    return _pad_views(samples)


def _pad_views(clips: list[Any]) -> Any:
    if isinstance(clips[0], list):  # views: one padded batch per view
        return [_pad(list(view)) for view in zip(*clips)]
    return _pad(clips)


def _pad(clips: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    lengths = torch.tensor([len(waveform) for waveform in clips])
    batch = torch.zeros(len(clips), int(lengths.max()))
    for row, waveform in enumerate(clips):
        batch[row, : len(waveform)] = waveform
    return {"waveform": batch, "lengths": lengths}


class AudioDataModule(FeatureServingSlot, LabelledData, ResumableTrainLoaders, LightningDataModule):
    """Base for labelled audio datamodules: subclasses implement `load_data` (file paths and labels); splits,
    decoding, cropping, feature serving and resumable loaders are done here.

    Args:
        batch_size: clips per batch.
        num_workers: DataLoader worker processes (they decode and resample).
        augment: crop long training clips at a random place and change their volume at random (``gain_db``);
            ``false`` reads training clips whole, as evaluation does.
        gain_db: the largest volume change of a training clip, in decibels either way.
        noise_snr_db: ``[low, high]``: add white noise to each training clip at a signal-to-noise ratio drawn
            between them, in decibels (``[10, 30]``: from clearly noisy to faint); default: none.
        val_fraction: fraction of each class held out for validation.
        test_fraction: fraction of each class held out for testing.
        labels_per_class: keep only this many labelled training clips per class (limited-label experiments).
        train_fraction: keep only this fraction of each class's training clips.
        seed: seed for every split, subset and crop.
        predict_dir: a folder of clips to label with ``tlkit predict`` (any layout, any depth); default: the test
            split. A file there that is no readable clip is skipped with one line naming it.
    """

    #: Not usable on its own: the CLI offers only its subclasses, and using it directly is a one-line error.
    base_class_only = True
    classes_hint = "a classifier needs one folder per class"
    #: The split `tlkit test` and `tlkit predict` read.
    test_split = "test"

    def __init__(
        self,
        batch_size: int = 32,
        num_workers: int = 0,
        augment: bool = True,
        gain_db: float = 6.0,
        noise_snr_db: list[float] | None = None,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        labels_per_class: int | None = None,
        train_fraction: float | None = None,
        seed: int = 0,
        predict_dir: str | None = None,
    ) -> None:
        super().__init__()
        refuse_base_class(self, "data", "tlkit.datamodules")
        check_split_arguments(batch_size, val_fraction, test_fraction)
        check_label_limits(labels_per_class, train_fraction)
        if gain_db < 0:
            raise config_error("gain_db", "a number of decibels >= 0", gain_db)
        if noise_snr_db is not None and (len(noise_snr_db) != 2 or noise_snr_db[0] > noise_snr_db[1]):
            raise config_error("noise_snr_db", "[low, high] decibels with low <= high, or null", noise_snr_db)
        self.save_hyperparameters()
        self.classes: list[str] = []
        self.splits: dict[str, Split] = {}
        self._loaded: tuple[list[str], dict[str, Split]] | None = None
        self._predict: Split | None = None  # the predict_dir's clips, once scanned

    def load_data(self) -> tuple[list[str], dict[str, Split]]:
        """Return (class names, splits of audio file paths); ``train`` is required, ``val``/``test`` are held out of
        it if missing. Called once."""
        raise NotImplementedError

    def load_clip(self, sample: Any, sample_rate: int) -> np.ndarray:
        """One stored sample as a mono float32 waveform at ``sample_rate`` (default: an audio file's path)."""
        return read_audio(sample, sample_rate)

    # -------------------------------------------------------------------------------------------- datasets
    def audio_config(self, request: DataRequest | None = None) -> AudioConfig:
        """The attached model's (or ``request``'s) audio input config; another backbone is a one-line error."""
        request = request if request is not None else model_request(self)
        config = request.input_config
        if config is None:
            return AudioConfig()
        if not isinstance(config, AudioConfig):
            raise ConfigError(
                f"Expected an audio backbone (`backbone: audio:resemblyzer`) for {type(self).__name__}, but the "
                f"model's backbone reads {'text' if isinstance(config, TextConfig) else 'images'}."
            )
        return config

    def dataset(self, split: str, train: bool | None = None, request: DataRequest | None = None) -> Dataset:
        """The named split's clips, cropped and varied in volume for training (``train``: by default by name); served
        as the backbone's cached features while a serving is handed in and the clips are read whole."""
        request = request if request is not None else model_request(self)
        config = self.audio_config(request)
        random = (split == "train" if train is None else train) and self.hparams.augment
        dataset = self.clips(split, config, random, self.configured_noise())
        serving = self.feature_serving
        if serving is None or not serving.active or random:
            return dataset
        data = self.splits[split]
        key = data_fingerprint(data.samples, data.labels)
        return serving.dataset(dataset, key, f"audio at {config.sample_rate} Hz", name=split, collate_fn=pad_waveforms)

    def clips(
        self, split: str, config: AudioConfig, random: bool, noise: tuple[float, float] | None = None
    ) -> AudioClips:
        """The named split's clips at ``config``'s rate; with ``random``, cropped at random to the training length,
        varied in volume by up to ``gain_db`` and, with ``noise``, noisy at a signal-to-noise ratio in its range."""
        crop = round(config.max_seconds * config.sample_rate) if random else None
        gain = self.hparams.gain_db if random else 0.0
        return AudioClips(self.splits[split], config.sample_rate, crop, gain, self.load_clip, noise if random else None)

    def configured_noise(self) -> tuple[float, float] | None:
        """``noise_snr_db`` as a (low, high) pair, or None when no noise is configured."""
        return tuple(self.hparams.noise_snr_db) if self.hparams.noise_snr_db is not None else None

    # --------------------------------------------------------------------------------------------- loaders
    def _loader_options(self) -> dict[str, Any]:
        hp = self.hparams
        return dict(batch_size=hp.batch_size, num_workers=hp.num_workers, collate_fn=pad_waveforms)

    def train_dataloader(self) -> DataLoader:
        return self.training_loader("train", self.dataset("train"))

    def evaluation_loader(self, split: str) -> DataLoader:
        return DataLoader(self.dataset(split, train=False), **self._loader_options())

    def val_dataloader(self) -> DataLoader:
        return self.evaluation_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.evaluation_loader(self.test_split)

    def _predict_split(self) -> Split:
        if self.hparams.predict_dir is None:
            return self.splits[self.test_split]
        if self._predict is None:  # scanned once: the writer's names and the loader share it
            clips = scan_clips(Path(self.hparams.predict_dir).expanduser())
            self._predict = Split([str(clip) for clip in clips], [-1] * len(clips))  # -1: no label
        return self._predict

    def predict_dataloader(self) -> DataLoader:
        if self.hparams.predict_dir is None:
            return self.evaluation_loader(self.test_split)
        config = self.audio_config()
        # A predict folder's clips are files, whatever this datamodule stores its own samples as.
        dataset = AudioClips(self._predict_split(), config.sample_rate)
        return DataLoader(dataset, **self._loader_options())

    def predict_sample_names(self) -> list[str]:
        """Each predicted clip as the written predictions name it: its file path (a dataset's ``<split>/<row>``)."""
        return [str(sample) for sample in self._predict_split().samples]


InvalidPolicy = Literal["error", "skip"]


def scan_audio_folder(root: Path, on_invalid: InvalidPolicy = "error") -> tuple[list[str], list[Path], list[int]]:
    """(class names, audio file paths, labels) of ``root/<class>/<clip>`` (clips at any depth under their class
    folder), every file's header checked: a file that is no usable audio is an error naming it, or with
    ``on_invalid: skip`` left out with a warning naming it."""
    classes = class_folders(root, "clip")
    paths: list[Path] = []
    labels: list[int] = []
    skipped: list[str] = []
    for label, name in enumerate(classes):
        found = []
        for path in sorted(p for p in (root / name).rglob("*") if p.is_file() and not p.name.startswith(".")):
            problem = audio_problem(path)
            if problem is None:
                found.append(path)
            elif on_invalid == "error":
                raise ConfigError(
                    f"Expected every file under {str(root)!r} to be a readable audio clip, but {str(path)!r} is "
                    f"{problem}: remove it, or set `on_invalid: skip`."
                )
            else:
                skipped.append(f"{path} ({problem})")
        if not found:
            raise ConfigError(f"Expected class folder {str(root / name)!r} to contain audio clips, but it has none.")
        paths += found
        labels += [label] * len(found)
    if skipped:
        rank_zero_warn(f"Skipped {len(skipped)} unusable file(s): " + "; ".join(skipped))
    return classes, paths, labels


def scan_clips(root: Path) -> list[Path]:
    """Every usable clip under ``root`` (any depth), sorted, for labelling new clips; a file that is no readable clip
    is skipped with one line naming it and why (a prediction is never silently missing)."""
    check_folder(root, "predict folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    clips, skipped = [], []
    for path in files:
        problem = audio_problem(path)
        if problem is None:
            clips.append(path)
        else:
            skipped.append(f"{path}: {problem}")
    if skipped:
        rank_zero_info(
            "\n  ".join([f"tlkit: skipped {len(skipped)} of {len(files)} file(s) in {str(root)!r}:", *skipped])
        )
    if not clips:
        raise ConfigError(f"Expected predict folder {str(root)!r} to contain audio clips, but it has none.")
    return clips


class AudioFolderDataModule(AudioDataModule):
    """Audio clips in one folder per class (``data_dir/<class>/<clip>.wav``; FLAC, OGG and MP3 too), split into
    train/val/test by ``val_fraction``/``test_fraction``.

    Args:
        data_dir: the folder of class folders.
        on_invalid: a file that is no readable audio clip is an ``error`` (default), or ``skip``ped with a warning
            naming it.

    The other arguments are `AudioDataModule`'s.

    Examples:
        >>> dm = AudioFolderDataModule("data/keywords", batch_size=16)
    """

    def __init__(self, data_dir: str, *, on_invalid: InvalidPolicy = "error", **kwargs) -> None:
        if on_invalid not in ("error", "skip"):
            raise config_error("on_invalid", "'error' or 'skip'", on_invalid)
        super().__init__(**kwargs)

    def describe_source(self) -> str:
        return repr(self.hparams.data_dir)

    def load_data(self) -> tuple[list[str], dict[str, Split]]:
        classes, paths, labels = scan_audio_folder(Path(self.hparams.data_dir).expanduser(), self.hparams.on_invalid)
        return classes, {"train": Split([str(p) for p in paths], labels)}


def bundled_voices() -> Path:
    """The folder of the recorded clips tlkit ships (see its ATTRIBUTION.md)."""
    return Path(str(resources.files("tlkit.datamodules") / "data" / "voices"))


class VoicesDataModule(AudioDataModule):
    """Real recorded speech that ships with tlkit: the numbers 0 to 20 spoken by the voices of Asterisk's prompts,
    8 kHz telephone recordings (CC-BY-SA-3.0 and CC-BY-3.0; authors in ``data/voices/ATTRIBUTION.md``): Allison Smith
    in English and in Spanish, June Wallack in French, and Carlo Flora in Italian.

    Args:
        task: ``speaker`` names who speaks (3 classes: allison, carlo, june; Allison's English and Spanish clips are
            one class); ``language`` names the language (4 classes: en, es, fr, it).

    The other arguments are `AudioDataModule`'s.
    """

    def __init__(self, *, task: Literal["speaker", "language"] = "speaker", **kwargs) -> None:
        if task not in ("speaker", "language"):
            raise config_error("task", "'speaker' or 'language'", task)
        super().__init__(**kwargs)

    def describe_source(self) -> str:
        return "tlkit's bundled voices"

    def load_data(self) -> tuple[list[str], dict[str, Split]]:
        root = bundled_voices()
        clips = sorted(root.glob("*/*.flac"))
        # Folders are <language>_<speaker>: en_allison, es_allison, fr_june, it_carlo.
        position = 1 if self.hparams.task == "speaker" else 0
        names = [clip.parent.name.split("_")[position] for clip in clips]
        classes = sorted(set(names))
        return classes, {"train": Split([str(c) for c in clips], [classes.index(n) for n in names])}
