"""`FCOSDetector`: torchvision's FCOS head (Tian et al., 2019) on a feature pyramid over a backbone's maps.

FCOS over RetinaNet and Faster R-CNN: it is anchor-free (one point per map location, no anchor sizes or aspect
ratios to tune for a new dataset, which is what transfer to small or oddly shaped objects needs), single-stage (no
region proposals or RoI pooling: fewer parts to fine-tune and to export), and torchvision keeps its matching,
losses (sigmoid focal loss, GIoU, centerness) and decoding, which this module calls rather than copies. The pyramid
is torchvision's ``FeaturePyramidNetwork``, as for segmentation, over the backbone's maps at strides 8 to 32 (FCOS's
P3-P5; the P6 and P7 levels that only very large objects use are left out). Images are not resized or normalised
here: tlkit's datamodules did it, so torchvision's own transform is set to leave them as they are.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import FeaturePyramidNetwork

from tlkit.protocols import FeatureMap

#: The pyramid's strides (FCOS's P3-P5).
DETECTION_STRIDES = (8, 16, 32)


@dataclass
class DetectorOutputs:
    """What `FCOSDetector` computes for a batch: the head's outputs per location, the locations (as boxes of the
    level's stride), how many locations each level has, and the batch's image size; ``detector`` is the module that
    computed them, which turns them into losses or detections."""

    head: dict[str, torch.Tensor]
    anchors: list[torch.Tensor]
    counts: list[int]
    image_size: tuple[int, int]
    detector: FCOSDetector

    def __len__(self) -> int:
        return len(self.anchors)


class _Channels(nn.Module):
    """What torchvision's FCOS asks of a backbone (its width); the maps come from tlkit's `Backbone` instead."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.out_channels = channels


class FCOSDetector(nn.Module):
    """Box detections from a backbone's feature maps.

    Args:
        feature_info: the backbone's maps (`Backbone.feature_info`).
        num_classes: the object classes (no background class: FCOS scores each class with its own sigmoid).
        channels: width of the pyramid and of the head.
        head_convs: 3x3 convolutions in each of the head's two towers (torchvision's default is 4).
        score_threshold: the least score a detection is kept with.
        nms_threshold: the IoU above which non-maximum suppression drops the lower-scored of two boxes of a class.
        detections_per_image: the most detections kept per image.
    """

    def __init__(
        self,
        feature_info: Sequence[FeatureMap],
        num_classes: int,
        channels: int = 64,
        head_convs: int = 2,
        score_threshold: float = 0.05,
        nms_threshold: float = 0.6,
        detections_per_image: int = 100,
    ) -> None:
        super().__init__()
        self.levels = [i for i, m in enumerate(feature_info) if m.stride in DETECTION_STRIDES]
        if not self.levels:
            self.levels = [len(feature_info) - 1]
        strides = [feature_info[i].stride for i in self.levels]
        self.input_stride = feature_info[0].stride  # the first map's size times it is the input's
        self.fpn = FeaturePyramidNetwork([feature_info[i].channels for i in self.levels], channels)
        anchors = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
        self.fcos = FCOS(
            _Channels(channels),
            num_classes,
            min_size=1,
            max_size=1,
            image_mean=[0.0, 0.0, 0.0],
            image_std=[1.0, 1.0, 1.0],
            anchor_generator=anchors,
            head=FCOSHead(channels, 1, num_classes, num_convs=head_convs),
            score_thresh=score_threshold,
            nms_thresh=nms_threshold,
            detections_per_img=detections_per_image,
        )

    def forward(self, maps: Sequence[torch.Tensor]) -> DetectorOutputs:
        pyramid = list(self.fpn(OrderedDict((str(i), maps[level]) for i, level in enumerate(self.levels))).values())
        n, height, width = maps[0].shape[0], *(d * self.input_stride for d in maps[0].shape[-2:])
        # Only the batch's size, device and dtype are read from the images: an empty placeholder stands in.
        images = ImageList(maps[0].new_empty((n, 0, height, width)), [(height, width)] * n)
        head = self.fcos.head(pyramid)
        anchors = self.fcos.anchor_generator(images, pyramid)
        return DetectorOutputs(head, anchors, [x.shape[2] * x.shape[3] for x in pyramid], (height, width), self)

    def losses(self, outputs: DetectorOutputs, targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """FCOS's classification (focal), box (GIoU) and centerness losses."""
        return self.fcos.compute_loss(targets, outputs.head, outputs.anchors, outputs.counts)

    def detections(self, outputs: DetectorOutputs) -> list[dict[str, torch.Tensor]]:
        """Per image: ``boxes`` (x1, y1, x2, y2 in the input's pixels), ``scores`` and ``labels``."""
        head = {k: list(v.split(outputs.counts, dim=1)) for k, v in outputs.head.items()}
        anchors = [list(a.split(outputs.counts)) for a in outputs.anchors]
        return self.fcos.postprocess_detections(head, anchors, [outputs.image_size] * len(outputs))
