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
from torchvision.ops import boxes as box_ops

from tlkit.protocols import FeatureMap

#: The pyramid's strides (FCOS's P3-P5).
DETECTION_STRIDES = (8, 16, 32)


@dataclass
class DetectorOutputs:
    """What `FCOSDetector` computes for a batch: the head's outputs per location, the locations (as boxes of the
    level's stride, the same for every image of the batch), how many locations each level has, and the batch's
    image size; ``detector`` is the module that computed them, which turns them into losses or detections."""

    head: dict[str, torch.Tensor]
    anchors: torch.Tensor
    counts: list[int]
    image_size: tuple[int, int]
    detector: FCOSDetector

    def __len__(self) -> int:
        return self.head["cls_logits"].shape[0]


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
        height, width = (int(d) * self.input_stride for d in maps[0].shape[-2:])
        # The locations are the same for every image: computed once, for an empty placeholder of one image (only
        # its size, device and dtype are read), so an exported graph keeps its batch size free.
        placeholder = ImageList(maps[0].new_empty((1, 0, height, width)), [(height, width)])
        anchors = self.fcos.anchor_generator(placeholder, pyramid)[0]
        head = self.fcos.head(pyramid)
        return DetectorOutputs(head, anchors, [x.shape[2] * x.shape[3] for x in pyramid], (height, width), self)

    def losses(self, outputs: DetectorOutputs, targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """FCOS's classification (focal), box (GIoU) and centerness losses."""
        return self.fcos.compute_loss(targets, outputs.head, [outputs.anchors] * len(targets), outputs.counts)

    def locations(self, outputs: DetectorOutputs) -> torch.Tensor:
        """Every location's decoded box and class scores before thresholds and non-maximum suppression, (N,
        locations, 4 + classes): x1, y1, x2, y2 (in the input's pixels, clipped to it), then each class's
        sqrt(sigmoid(class logit) x sigmoid(centerness)), as FCOS's decoding scores them. A fixed shape: what an
        exported model returns, non-maximum suppression left to its caller."""
        head = outputs.head
        boxes = self.fcos.box_coder.decode(head["bbox_regression"], outputs.anchors)
        boxes = box_ops.clip_boxes_to_image(boxes, outputs.image_size)
        scores = torch.sqrt(torch.sigmoid(head["cls_logits"]) * torch.sigmoid(head["bbox_ctrness"]))
        return torch.cat([boxes, scores], dim=-1)

    def detections(self, outputs: DetectorOutputs) -> list[dict[str, torch.Tensor]]:
        """Per image: ``boxes`` (x1, y1, x2, y2 in the input's pixels), ``scores`` and ``labels``."""
        head = {k: list(v.split(outputs.counts, dim=1)) for k, v in outputs.head.items()}
        anchors = [list(outputs.anchors.split(outputs.counts))] * len(outputs)
        return self.fcos.postprocess_detections(head, anchors, [outputs.image_size] * len(outputs))
