"""What a user finds in TensorBoard after `tlkit fit` with a shipped config and the defaults: the augmented batch,
the confusion matrix with class names, the worst-classified images, the reliability diagram, per-class accuracy,
the resolved config,
``hp_metric`` at the best monitored value, and learning-rate curves only for the groups that train."""

from __future__ import annotations

import io

from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests._console import TINY_IMAGE_MODEL, run_here, shipped


def test_a_gradual_unfreezing_run_shows_what_users_look_for(tmp_path):
    args = shipped("digits_gradual_unfreezing.yaml", *TINY_IMAGE_MODEL, "--trainer.max_epochs=3")
    run_here(args, tmp_path)
    run = tmp_path / "logs" / "digits_gradual_unfreezing" / "version_0"
    events = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/augmented_batch", "val/confusion_matrix", "val/worst_examples", "val/reliability"} <= set(
        tags["images"]
    )
    for tag in ("val/confusion_matrix", "val/worst_examples", "val/reliability"):
        image = Image.open(io.BytesIO(events.Images(tag)[-1].encoded_image_string))
        assert image.size[0] > 200 and len(set(image.convert("L").getdata())) > 10, tag  # a drawn figure
    assert {f"val/class_acc/{digit}" for digit in range(10)} <= set(tags["scalars"])
    assert "config/text_summary" in tags["tensors"]
    config = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "DigitsDataModule" in config and "ProgressiveUnfreezing" in config

    # hp_metric follows the best val/acc (Lightning's default leaves it at -1 for every run).
    best = max(e.value for e in events.Scalars("val/acc"))
    assert abs(events.Scalars("hp_metric")[-1].value - best) < 1e-6

    # Only groups that train have a learning-rate curve, from the step they unfreeze.
    lr_tags = {t for t in tags["scalars"] if t.startswith("lr-AdamW/")}
    assert lr_tags == {"lr-AdamW/head", "lr-AdamW/layer4.0"}, lr_tags  # 3 epochs: one group unfrozen
    first_head, first_layer4 = (events.Scalars(t)[0].step for t in ("lr-AdamW/head", "lr-AdamW/layer4.0"))
    assert first_head == 0 and first_layer4 > 0
