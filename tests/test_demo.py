"""`make demo` end to end, shortened to one batch per run: both runs train, test and print the table, and their
checkpoints work with the README's next commands."""

from tlkit.checkpoint import read_checkpoint
from tlkit.cli import demo, main


def test_demo_prints_the_comparison_table(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    short = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1"]
    results = demo.main(short + ["--trainer.limit_test_batches=1"])
    assert set(results) == {"ImageNet-pretrained", "random init"}
    assert all(0.0 <= r["acc"] <= 1.0 for r in results.values())
    printed = capsys.readouterr().out
    assert "| ImageNet-pretrained  |" in printed and "tensorboard --logdir logs" in printed
    last = tmp_path / "logs" / "digits_finetune" / "version_0" / "checkpoints" / "last.ckpt"
    assert (tmp_path / "logs" / "digits_finetune" / "version_1" / "checkpoints" / "last.ckpt").is_file()
    # The README's next command, on the demo's own checkpoint: it carries its run's config like a `tlkit fit`'s.
    assert "DigitsDataModule" in read_checkpoint(last).run_config
    main(["test", "--ckpt_path", str(last), "--trainer.limit_test_batches=1", "--trainer.enable_progress_bar=false"])
    assert "test/acc" in capsys.readouterr().out
