"""How long the `tlkit` command takes to answer before any training: help and bad input.

A user who mistypes an option should hear about it within seconds (goal: under 5 s on the 2-core CPU). Each case runs
the installed console script in a fresh process (imports included), `--repeats` times; the table shows the median.

    python benchmarks/cli_startup.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, parse_args, table, write_json

REPO = Path(__file__).resolve().parents[1]
TLKIT = Path(sys.executable).parent / "tlkit"
CONFIG = str(REPO / "configs" / "digits_finetune.yaml")
CASES = {
    "tlkit --help": ["--help"],
    "tlkit fit --help": ["fit", "--help"],
    "tlkit fit --model FineTuning --help": ["fit", "--model", "FineTuning", "--help"],
    "misspelt option (--model.lr_decai)": ["fit", "--config", CONFIG, "--model.lr_decai=0.5"],
    "bad value (--model.head conv)": ["fit", "--config", CONFIG, "--model.head=conv"],
    "unknown backbone (resnet5)": ["fit", "--config", CONFIG, "--model.backbone=resnet5"],
    "missing data folder": ["fit", "--config", str(REPO / "configs" / "imagefolder_finetune.yaml")],
}


def seconds(args: list[str], cwd: str) -> tuple[float, int]:
    started = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([str(TLKIT), *args], cwd=cwd, capture_output=True, env=env, timeout=300)
    return time.perf_counter() - started, result.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    args = parse_args(parser, {"repeats": 1, "cases": ["tlkit --help", "misspelt option (--model.lr_decai)"]})
    results = {}
    with tempfile.TemporaryDirectory() as cwd:
        for name in args.cases:
            case = CASES[name]
            runs = [seconds(case, cwd) for _ in range(args.repeats)]
            results[name] = {"median_s": statistics.median(t for t, _ in runs), "exit_code": runs[0][1]}
    rows = [[name, f"{r['median_s']:.2f} s", str(r["exit_code"])] for name, r in results.items()]
    print(f"\ntlkit command start-up, median of {args.repeats} runs ({machine()})\n")
    print(table(["case", "time to answer", "exit code"], rows))
    print(f"\nJSON: {write_json('cli_startup', {'repeats': args.repeats, 'results': results})}")


if __name__ == "__main__":
    main()
