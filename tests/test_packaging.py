"""strategies/ and datamodules/ must import as tlkit.strategies / tlkit.datamodules however tlkit is installed, and
never as top-level packages (PyPI already has an unrelated `strategies`)."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBE = (
    "import importlib.util, tlkit.strategies, tlkit.datamodules; "
    "from tlkit.strategies import FineTuning; from tlkit.datamodules import DigitsDataModule; "
    "print(tlkit.__file__); print(tlkit.strategies.__file__); print(tlkit.datamodules.__file__); "
    "print(importlib.util.find_spec('strategies'), importlib.util.find_spec('datamodules')); "
    "import sys; print('strategies' in sys.modules or 'datamodules' in sys.modules)"
)


def run(python, cwd, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(env_extra or {})
    result = subprocess.run([python, "-c", PROBE], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split("\n")


def pip(*args):
    # The build backend (setuptools) comes from this environment, so no build dependency is downloaded.
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_from_the_repository_root():
    # The folders are importable as top-level names here (the working directory is on sys.path), but tlkit itself
    # must only ever load them as tlkit.strategies / tlkit.datamodules.
    tlkit_file, strategies_file, datamodules_file, _, loaded_top_level = run(sys.executable, REPO)[:5]
    assert tlkit_file == str(REPO / "tlkit" / "__init__.py")
    assert strategies_file == str(REPO / "strategies" / "__init__.py")
    assert datamodules_file == str(REPO / "datamodules" / "__init__.py")
    assert loaded_top_level == "False"


def test_after_pip_install(tmp_path):
    target = tmp_path / "site"
    pip("install", "--no-deps", "--no-build-isolation", "--target", str(target), str(REPO))
    assert (target / "tlkit" / "strategies" / "fine_tuning.py").is_file()
    assert (target / "tlkit" / "datamodules" / "digits.py").is_file()
    assert not (target / "strategies").exists() and not (target / "datamodules").exists()
    # Run from elsewhere with the installed copy first on the path: it must be the one imported.
    tlkit_file, strategies_file, datamodules_file, top_level = run(
        sys.executable, tmp_path, {"PYTHONPATH": str(target)}
    )[:4]
    assert tlkit_file == str(target / "tlkit" / "__init__.py")
    assert strategies_file == str(target / "tlkit" / "strategies" / "__init__.py")
    assert top_level == "None None"


def test_after_editable_install(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    pip("--python", str(python), "install", "--no-deps", "--no-build-isolation", "-e", str(REPO))
    # Dependencies come from this environment; a path line in a .pth file adds them without its own .pth hooks.
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    tlkit_file, strategies_file, datamodules_file, top_level = run(str(python), tmp_path)[:4]
    assert tlkit_file == str(REPO / "tlkit" / "__init__.py")
    assert strategies_file == str(REPO / "strategies" / "__init__.py")
    assert top_level == "None None"


def _source_modules() -> set[str]:
    roots = {
        "tlkit": REPO / "tlkit",
        "tlkit/strategies": REPO / "strategies",
        "tlkit/datamodules": REPO / "datamodules",
    }
    return {
        f"{prefix}/{path.relative_to(folder).as_posix()}"
        for prefix, folder in roots.items()
        for path in folder.rglob("*.py")
        if "__pycache__" not in path.parts
    }


def test_built_wheel_holds_every_module_and_runs_alone(tmp_path):
    pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(REPO))
    (wheel,) = (tmp_path / "dist").glob("tlkit-*.whl")
    import zipfile

    in_wheel = {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    assert _source_modules() <= in_wheel, sorted(_source_modules() - in_wheel)
    assert not any(name.startswith(("strategies/", "datamodules/")) for name in in_wheel)

    # A fresh environment with only the wheel installed (no editable finder); dependencies come from this one.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    pip("--python", str(venv / "bin" / "python"), "install", "--no-deps", str(wheel))
    site = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    args = ["fit", "--model=FineTuning", "--model.backbone=test_resnet", "--model.weights=null"]
    args += ["--data=DigitsDataModule", "--data.image_size=32", "--trainer.fast_dev_run=true"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [str(venv / "bin" / "tlkit"), *args], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    probe = "import tlkit.functional, tlkit.strategies; print(tlkit.strategies.__file__)"
    where = subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert where.stdout.strip().startswith(site), where.stdout + where.stderr
