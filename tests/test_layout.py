"""The package layout's rules: which package may import which (callbacks know no strategy or datamodule; datamodules
know no strategy), so each side changes behind the typed contracts in tlkit/protocols.py and tlkit/data_request.py."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "tlkit/callbacks": ("tlkit.strategies", "tlkit.datamodules"),
    "datamodules": ("tlkit.strategies", "tlkit.callbacks"),
    "tlkit/metrics": ("tlkit.strategies", "tlkit.datamodules", "tlkit.callbacks"),
    "tlkit/functional": ("tlkit.strategies", "tlkit.datamodules", "tlkit.callbacks"),
    "tlkit/backbones": ("tlkit.strategies", "tlkit.datamodules", "tlkit.callbacks"),
}
#: The base contracts every layer builds on import no layer above them. (protocols.py and data_request.py still take
#: DataConfig and InputConfig from tlkit.backbones.)
BASE = ("tlkit/errors.py", "tlkit/randomness.py", "tlkit/checkpoint.py")
ABOVE_BASE = (
    "tlkit.strategies",
    "tlkit.datamodules",
    "tlkit.callbacks",
    "tlkit.backbones",
    "tlkit.cli",
    "tlkit.export",
)
FORBIDDEN.update({module: ABOVE_BASE for module in BASE})


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_in_the_allowed_direction(package):
    offending = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in ([ROOT / package] if package.endswith(".py") else sorted((ROOT / package).rglob("*.py")))
        for name in imported_modules(path)
        if name.startswith(FORBIDDEN[package])
    ]
    assert not offending, offending


def test_no_module_probes_another_packages_attributes_by_name():
    """``getattr(obj, "name", ...)`` across packages hides a contract; the few string lookups left are of the
    module's own objects or of Lightning's, each listed here with its reason."""
    allowed = {
        "tlkit/cli/lightning_cli.py": 3,  # jsonargparse's subcommand parser, the logger's log_dir, a class_path value
        "tlkit/checkpoint.py": 1,  # a class by its import path (what class_path names)
        "tlkit/errors.py": 3,  # a module's __all__ and its classes (the CLI's list of valid names)
        "tlkit/backbones/_builders.py": 3,  # timm's group_matcher capability; a model's classifier, by its name
        "tlkit/backbones/weights.py": 1,  # the ModelFile class of a bundled-weights package, by its name
        "tlkit/callbacks/_lightning_internals.py": 1,  # whether Lightning still has the private API it needs
        "datamodules/digits_m.py": 1,  # scikit-image's bundled photo loaders, by name
    }
    found = {}
    for package in ("tlkit", "strategies", "datamodules"):
        for path in sorted((ROOT / package).rglob("*.py")):
            calls = [
                node
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr", "setattr")
            ]
            if calls:
                found[str(path.relative_to(ROOT))] = len(calls)
    assert found == allowed
