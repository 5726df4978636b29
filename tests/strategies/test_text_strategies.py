"""The strategies and callbacks on a text backbone, unchanged: cached linear probe, discriminative learning rates,
gradual unfreezing with warm-up, and exact resume (dropout and all)."""

from __future__ import annotations

from lightning.pytorch.callbacks import ModelCheckpoint

from tests.callbacks._helpers import max_difference, trainer
from tests.conftest import quiet_trainer
from tlkit.callbacks import LRWarmup, ProgressiveUnfreezing
from tlkit.datamodules import TextFileDataModule
from tlkit.features import FeatureCache
from tlkit.strategies import FeatureExtraction, FineTuning


def test_feature_extraction_trains_the_head_on_features_computed_once(tiny_bert, sentiment_csv):
    FeatureCache.memory.clear()
    model = FeatureExtraction(f"hf:{tiny_bert}", cache_features="memory")
    fit = quiet_trainer(max_epochs=3)
    fit.fit(model, datamodule=TextFileDataModule(str(sentiment_csv), batch_size=8))
    assert len(FeatureCache.memory) == 2  # train and val, each computed once for the three epochs
    assert all(not p.requires_grad for p in model.backbone.parameters())


def test_fine_tuning_gives_each_layer_its_decayed_learning_rate(tiny_bert):
    model = FineTuning(f"hf:{tiny_bert}", num_classes=2, lr_decay=0.5)
    scales = {g["name"]: g["lr_scale"] for g in model.param_groups()}
    assert scales == {"embeddings": 0.125, "layer.0": 0.25, "layer.1": 0.5, "head": 1.0}


def test_gradual_unfreezing_with_warm_up_resumes_bitwise(tiny_bert, sentiment_csv, tmp_path):
    def run(root, ckpt_path=None, extra=()):
        model = FineTuning(f"hf:{tiny_bert}", lr_decay=0.5)  # BERT's dropout is on: randomness must resume too
        callbacks = [ProgressiveUnfreezing(every_n_epochs=1), LRWarmup(duration=4), *extra]
        data = TextFileDataModule(str(sentiment_csv), batch_size=8)
        trainer(root, callbacks, max_epochs=4).fit(model, datamodule=data, ckpt_path=ckpt_path)
        return model, callbacks[0]

    every_epoch = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1)
    reference, unfreezing = run(tmp_path, extra=[every_epoch])
    assert unfreezing.phase == 3 and reference.backbone.trainable_group_names == ["embeddings", "layer.0", "layer.1"]
    resumed, _ = run(tmp_path / "resumed", ckpt_path=tmp_path / "ckpt" / "epoch=1.ckpt")
    assert max_difference(reference.state_dict(), resumed.state_dict()) == 0.0
