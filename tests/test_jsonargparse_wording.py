"""The jsonargparse wording that tlkit's one-line errors are read from, checked against the real messages.

jsonargparse reports problems as text, with no structured error to read; `tlkit.cli.messages.JSONARGPARSE_WORDING`
names each phrase the summary relies on. Each case here makes jsonargparse produce its message through the `tlkit`
command and checks that the phrase is still in it: an upgrade that rewords one fails here, naming the phrase, rather
than turning a user's one-line error into jsonargparse's full report.
"""

from __future__ import annotations

import pytest

from tests.conftest import TINY_FIT_ARGS
from tlkit.cli import lightning_cli, main
from tlkit.cli.messages import JSONARGPARSE_WORDING

#: For each phrase: a command line whose error message holds it.
CASES = {
    "yaml_problem": ["fit", "--config", "bad.yaml"],
    "parser_key": ["fit", *TINY_FIT_ARGS, "--trainer.max_epochs=two"],
    "expected_type": ["fit", *TINY_FIT_ARGS, "--model.lr_decay=half"],
    "class_path": ["fit", *TINY_FIT_ARGS, "--model.lr_decai=0.5"],
    "not_accepted": ["fit", *TINY_FIT_ARGS, "--model.lr_decai=0.5"],
    "unrecognized": ["fit", *TINY_FIT_ARGS, "--trainer.max_epoch=1"],
    "import_path": ["fit", *TINY_FIT_ARGS, "--model=NoSuchStrategy"],
    "given_value": ["fit", *TINY_FIT_ARGS, "--model.head=conv"],
    "subtypes": ["fit", *TINY_FIT_ARGS, "--trainer.max_epochs=two"],
}


def test_every_phrase_has_a_case():
    assert set(CASES) == set(JSONARGPARSE_WORDING)


@pytest.mark.parametrize("phrase", sorted(CASES))
def test_jsonargparse_still_words_its_errors_as_tlkit_reads_them(phrase, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("model:\n  class_path: FineTuning\n   init_args: [\n")
    messages = []
    summarize = lightning_cli.summarize_parser_error
    monkeypatch.setattr(
        lightning_cli,
        "summarize_parser_error",
        lambda message, *a, **k: messages.append(message) or summarize(message, *a, **k),
    )
    with pytest.raises(SystemExit):
        main(CASES[phrase])
    assert messages, "jsonargparse reported no error"
    assert JSONARGPARSE_WORDING[phrase].search(messages[-1]), f"{phrase!r} no longer in:\n{messages[-1][:2000]}"
