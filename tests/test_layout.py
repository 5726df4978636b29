"""The package layout's rules, layer by layer: which package may import which, so each side changes behind the typed
contracts of the base (tlkit/protocols.py, tlkit/data_request.py, tlkit/checkpoint.py).

From the bottom: the base contracts (errors, randomness, checkpoint, protocols, data request, input config);
functional, metrics and features; tasks; backbones; strategies, datamodules and callbacks, which know one another only
through the base; the engines (export, ranking, run selection); the command line."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINES_AND_CLI = ("tlkit.engines", "tlkit.cli")
#: The base contracts every layer builds on import no layer above them.
BASE = (
    "tlkit/errors.py",
    "tlkit/randomness.py",
    "tlkit/checkpoint.py",
    "tlkit/protocols.py",
    "tlkit/data_request.py",
    "tlkit/input_config.py",
)
ABOVE_BASE = (
    "tlkit.strategies",
    "tlkit.datamodules",
    "tlkit.callbacks",
    "tlkit.backbones",
    "tlkit.features",
    "tlkit.tasks",
    "tlkit.functional",
    "tlkit.metrics",
    *ENGINES_AND_CLI,
)
FORBIDDEN = {
    "tlkit/functional": (
        "tlkit.strategies",
        "tlkit.datamodules",
        "tlkit.callbacks",
        "tlkit.backbones",
        "tlkit.features",
        "tlkit.tasks",
    )
    + ENGINES_AND_CLI,
    "tlkit/metrics": (
        "tlkit.strategies",
        "tlkit.datamodules",
        "tlkit.callbacks",
        "tlkit.backbones",
        "tlkit.features",
        "tlkit.tasks",
    )
    + ENGINES_AND_CLI,
    "tlkit/features": ("tlkit.strategies", "tlkit.datamodules", "tlkit.callbacks", "tlkit.backbones", "tlkit.tasks")
    + ENGINES_AND_CLI,
    "tlkit/tasks": ("tlkit.strategies", "tlkit.datamodules", "tlkit.callbacks", "tlkit.backbones", "tlkit.features")
    + ENGINES_AND_CLI,
    "tlkit/backbones": ("tlkit.strategies", "tlkit.datamodules", "tlkit.callbacks") + ENGINES_AND_CLI,
    "tlkit/callbacks": ("tlkit.strategies", "tlkit.datamodules") + ENGINES_AND_CLI,
    "datamodules": ("tlkit.strategies", "tlkit.callbacks") + ENGINES_AND_CLI,
    "strategies": ENGINES_AND_CLI,
    "tlkit/engines": ("tlkit.cli",),
}
FORBIDDEN.update({module: ABOVE_BASE for module in BASE})
#: Where each installed package's source lives (strategies/ and datamodules/ install as tlkit.strategies and
#: tlkit.datamodules).
SOURCES = {"tlkit": "tlkit", "tlkit.strategies": "strategies", "tlkit.datamodules": "datamodules"}


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"


def imported_modules(path: Path) -> list[str]:
    """Every module ``path`` imports at run time. Imports under ``if TYPE_CHECKING:`` only name the types an
    annotation describes and create no dependency at run time, so they are not counted."""
    names = []

    def visit(node: ast.AST) -> None:
        if _type_checking_block(node):
            return
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return names


def package_of(path: Path) -> str:
    """The installed package a source file belongs to: ``datamodules/folders.py`` -> ``tlkit.datamodules``."""
    parts = path.relative_to(ROOT).parent.parts
    installed = {source: package for package, source in SOURCES.items()}
    return ".".join([installed[parts[0]], *parts[1:]])


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
        "tlkit/backbones/feature_maps.py": 2,  # timm's feature_info and forward_intermediates capabilities
        "tlkit/callbacks/_lightning_internals.py": 1,  # whether Lightning still has the private API it needs
        "datamodules/digits_m.py": 1,  # scikit-image's bundled photo loaders, by name
    }
    assert calls_of("getattr", "hasattr", "setattr") == allowed


def test_no_module_imports_another_packages_private_module():
    """A tlkit module named ``_x`` is its package's own business: another package uses the package's public names.
    (Other libraries' private modules are used only in tlkit/callbacks/_lightning_internals.py, listed there.)"""
    offending = []
    for source in SOURCES.values():
        for path in sorted((ROOT / source).rglob("*.py")):
            for name in imported_modules(path):
                parts = name.split(".")
                if parts[0] != "tlkit":
                    continue
                private = [i for i, part in enumerate(parts) if part.startswith("_") and not part.startswith("__")]
                if private and ".".join(parts[: private[0]]) != package_of(path):
                    offending.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offending, offending


def calls_of(*names: str) -> dict[str, int]:
    """How many times each module of the packages calls any of the functions ``names`` (by their bare names)."""
    found = {}
    for package in ("tlkit", "strategies", "datamodules"):
        for path in sorted((ROOT / package).rglob("*.py")):
            calls = [
                node
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names
            ]
            if calls:
                found[str(path.relative_to(ROOT))] = len(calls)
    return found


def test_a_checkpoint_record_has_one_writer_and_a_head_one_builder():
    """One record under one key, written in one place (strategies extend `checkpoint_record`); heads are the task's
    to build (`Task.make_head`), so a command or strategy never builds one a task would not read."""
    assert calls_of("write_info") == {"strategies/transfer_module.py": 1}
    assert calls_of("make_head") == {"tlkit/tasks/base.py": 1}
    assert not (ROOT / "strategies" / "heads.py").exists()


def test_no_command_guesses_a_metrics_direction_from_its_name():
    """Which way a metric is better is the metric's (torchmetrics' ``higher_is_better``, through the task and the
    strategy): no module of the engines or the command line tests a metric's name for "loss", "mae" or "err"."""
    offenders = []
    for package in ("tlkit/engines", "tlkit/cli"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
                    constants = [n.value for n in ast.walk(node) if isinstance(n, ast.Constant)]
                    if any(c in ("loss", "mae", "rmse", "ece", "err") for c in constants):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders
