"""Source and target domains of audio clips for domain adaptation: `AudioDomainDataModule` (the audio side of
`TwoDomains`), `AudioDomainFolderDataModule` (two folders of class folders) and `VoicesDomainDataModule` (synthetic
speech to recorded speech, both shipped with tlkit)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

from torch.utils.data import Dataset

from tlkit.data_request import DataRequest
from tlkit.datamodules.audio import AudioDataModule, UnlabelledClips, bundled_voices, scan_audio_folder
from tlkit.datamodules.datasets import Split
from tlkit.datamodules.domain_adaptation import TwoDomains, domain_folders
from tlkit.datamodules.folders import InvalidPolicy, check_same_classes
from tlkit.errors import config_error

#: What a strong target view adds to a weak one where ``noise_snr_db`` is not set: noise from clearly audible to
#: faint, as RandAugment's strong view of an image is a heavier distortion of the same picture.
STRONG_NOISE_SNR_DB = (10.0, 30.0)


class AudioDomainDataModule(TwoDomains, AudioDataModule):
    """`TwoDomains` of audio clips, at the attached backbone's rate: target clips are cropped and varied in volume
    like training clips; the weak and strong views (``target_views: weak_strong``) are that, and that with white
    noise (at ``noise_snr_db``, default 10-30 dB). Subclasses implement `load_domains`.

    The arguments are `TwoDomains`' and `AudioDataModule`'s (``batch_size`` is per domain).
    """

    #: Not usable on its own: the CLI offers only its subclasses, and using it directly is a one-line error.
    base_class_only = True

    def target_training_set(self, request: DataRequest) -> Dataset:
        config, random, noise = self.audio_config(request), self.hparams.augment, self.configured_noise()
        if request.target_views == "weak_strong":
            strong = noise or STRONG_NOISE_SNR_DB
            views = [self.clips("target_train", config, random), self.clips("target_train", config, random, strong)]
        else:
            views = [self.clips("target_train", config, random, noise)]
        return UnlabelledClips(views, request.target_indices)

    def target_pool_set(self) -> Dataset:
        return UnlabelledClips([self.clips("target_train", self.audio_config(), random=False)])


class AudioDomainFolderDataModule(AudioDomainDataModule):
    """Source and target domains as folders of class folders of clips (``<class>/<clip>.wav``; FLAC, OGG, MP3 too),
    with the same class folders.

    Args:
        source_dir: the source domain's folder, relative to ``root`` when given.
        target_dir: the target domain's folder, relative to ``root`` when given.
        root: a folder holding one sub-folder per domain.
        on_invalid: a file that is no readable clip is an ``error`` (default), or ``skip``ped with a warning
            naming it.

    The other arguments are `AudioDomainDataModule`'s.

    Examples:
        >>> dm = AudioDomainFolderDataModule(root="data/keywords", source_dir="studio", target_dir="phone")
    """

    def __init__(
        self,
        source_dir: str,
        target_dir: str,
        root: str | None = None,
        *,
        on_invalid: InvalidPolicy = "error",
        **kwargs,
    ) -> None:
        if on_invalid not in ("error", "skip"):
            raise config_error("on_invalid", "'error' or 'skip'", on_invalid)
        super().__init__(**kwargs)
        self.source_dir, self.target_dir = domain_folders(source_dir, target_dir, root)

    def describe_source(self) -> str:
        return f"{str(self.source_dir)!r} and {str(self.target_dir)!r}"

    def load_domains(self) -> tuple[list[str], Split, Split]:
        on_invalid = self.hparams.on_invalid
        source_classes, source_paths, source_labels = scan_audio_folder(self.source_dir, on_invalid)
        target_classes, target_paths, target_labels = scan_audio_folder(self.target_dir, on_invalid)
        check_same_classes(source_classes, target_classes, self.source_dir, self.target_dir)
        return (
            source_classes,
            Split([str(path) for path in source_paths], source_labels),
            Split([str(path) for path in target_paths], target_labels),
        )


def bundled_synthetic_voices() -> Path:
    """The folder of the synthetic clips tlkit ships (espeak-ng's voices; see its GENERATED.md)."""
    return Path(str(resources.files("tlkit.datamodules") / "data" / "synthetic_voices"))


class VoicesDomainDataModule(AudioDomainDataModule):
    """Synthetic speech to recorded speech, both shipped with tlkit: the numbers 0 to 20 in English, Spanish, French
    and Italian, spoken by five of espeak-ng's synthetic voices (the labelled source: 420 clips) and by the four
    recorded voices of `VoicesDataModule` (the target: 84 clips of Asterisk's telephone prompts).

    Args:
        task: ``language`` names the language spoken (4 classes: en, es, fr, it); ``number`` the number spoken
            (21 classes, ``0`` to ``20``, in whichever language).

    The other arguments are `AudioDomainDataModule`'s.
    """

    def __init__(self, *, task: Literal["language", "number"] = "language", **kwargs) -> None:
        if task not in ("language", "number"):
            raise config_error("task", "'language' or 'number'", task)
        super().__init__(**kwargs)

    def describe_source(self) -> str:
        return "tlkit's bundled synthetic and recorded voices"

    def load_domains(self) -> tuple[list[str], Split, Split]:
        source = sorted(bundled_synthetic_voices().glob("*/*.flac"))
        target = sorted(bundled_voices().glob("*/*.flac"))
        language = self.hparams.task == "language"
        classes = ["en", "es", "fr", "it"] if language else [str(number) for number in range(21)]

        def label(clip: Path) -> int:  # folders are <language>_<voice>, files <number>.flac
            return classes.index(clip.parent.name.split("_")[0] if language else clip.stem)

        return (
            classes,
            Split([str(clip) for clip in source], [label(clip) for clip in source]),
            Split([str(clip) for clip in target], [label(clip) for clip in target]),
        )
