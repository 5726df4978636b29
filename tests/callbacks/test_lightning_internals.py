"""The private-API shims fail with a message naming what is missing, and warn on an untested Lightning."""

import lightning
import pytest
from lightning.pytorch.strategies import DDPStrategy

from tlkit.callbacks import _lightning_internals as internals


def test_a_lightning_without_the_private_api_is_named(monkeypatch):
    monkeypatch.delattr(DDPStrategy, "_register_ddp_hooks")
    with pytest.raises(RuntimeError, match=r"needs DDPStrategy\._register_ddp_hooks.*written for Lightning 2\.4"):
        internals.check_lightning_version()


def test_an_untested_lightning_version_warns_once(monkeypatch):
    monkeypatch.setattr(lightning, "__version__", "3.0.0")
    monkeypatch.setattr(internals, "_warned", False)
    with pytest.warns(UserWarning, match=r"written for Lightning 2\.4 to below 2\.7; this is 3\.0\.0"):
        internals.check_lightning_version()
    internals.check_lightning_version()  # no second warning (pytest's filter would turn it into an error below)


def test_the_installed_lightning_is_one_it_was_written_for(recwarn):
    internals.check_lightning_version()
    assert not [w for w in recwarn if "written for Lightning" in str(w.message)]


def test_a_lightning_without_a_model_checkpoint_method_resumable_checkpoint_overrides_is_named(monkeypatch):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from tlkit.callbacks import ResumableCheckpoint

    monkeypatch.delattr(ModelCheckpoint, "_save_last_checkpoint")
    with pytest.raises(RuntimeError, match=r"needs ModelCheckpoint\._save_last_checkpoint, which Lightning"):
        ResumableCheckpoint()


def test_every_private_lightning_method_tlkit_overrides_is_listed():
    """A private method of a Lightning base class that a tlkit subclass overrides is in PRIVATE_API, so a Lightning
    upgrade that drops it fails with its name instead of the override silently never running."""
    import inspect

    import tlkit.callbacks
    import tlkit.cli.lightning_cli
    import tlkit.strategies

    unlisted = []
    for module in (tlkit.callbacks, tlkit.strategies, tlkit.cli.lightning_cli):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if not cls.__module__.startswith("tlkit"):  # Lightning's own classes, imported into the module
                continue
            for base in cls.__mro__[1:]:
                if not base.__module__.startswith("lightning."):
                    continue
                for name in vars(cls):
                    # `_abc_impl`: the bookkeeping ABCMeta gives every abstract class, not an override.
                    if (
                        name.startswith("_")
                        and not name.startswith("__")
                        and name != "_abc_impl"
                        and name in vars(base)
                    ):
                        if name not in internals.PRIVATE_API.get(base, ()):
                            unlisted.append(f"{cls.__name__}.{name} overrides {base.__name__}.{name}")
    assert not unlisted, unlisted
