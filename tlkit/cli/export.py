"""``tlkit export``: write a checkpoint's model as ONNX and/or TorchScript, with its preprocessing, verified.

tlkit export --ckpt_path logs/digits_finetune/version_0/checkpoints/last.ckpt --out_dir exported/digits
tlkit export --ckpt_path last.ckpt --out_dir exported/ts --formats '[torchscript]' --images path/to/photos
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tlkit.cli._subcommand import SubcommandParser, run_reporting, subcommand_parser
from tlkit.engines.export import FORMATS, ExportFormat, ExportReport, export
from tlkit.engines.model_spec import SPEC_FILE


def build_parser() -> SubcommandParser:
    parser = subcommand_parser("export", __doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", type=str, required=True, help="A checkpoint of any tlkit strategy.")
    parser.add_argument("--out_dir", type=str, required=True, help="A new or empty folder for the exported files.")
    parser.add_argument("--formats", type=list[ExportFormat], default=list(FORMATS), help="onnx and/or torchscript.")
    parser.add_argument(
        "--images",
        type=str | None,
        default=None,
        help="A folder of real images, or clips for an audio model, to verify on (default: bundled).",
    )
    parser.add_argument("--opset", type=int, default=18, help="The ONNX opset.")
    parser.add_argument(
        "--tolerance_scale",
        type=float,
        default=1.0,
        help="A factor on the task's tolerance (|difference| <= atol + rtol x |value| per output kind; probabilities: "
        "atol 1e-4, rtol 1e-3): above 1 accepts a runtime that rounds differently. The same top class, label set, "
        "boxes or mask are required either way.",
    )
    return parser


def run(args: Sequence[str]) -> ExportReport:
    parser = build_parser()
    config = parser.parse_args(list(args))
    report = export(
        config.ckpt_path, config.out_dir, config.formats, config.images, config.opset, config.tolerance_scale
    )
    for name, path in report.files.items():
        check = report.checks.get(name)
        largest = (
            ""
            if check is None
            else f" (largest |difference| vs the checkpoint: {check.max_abs_difference:.2g}, relative "
            f"{check.max_rel_difference:.2g})"
        )
        print(f"{name}: {path}{largest}")
    criterion = next(iter(report.checks.values())).criterion if report.checks else ""
    print(
        f"Verified on {report.images} {report.kind} ({criterion}); {SPEC_FILE} holds the preprocessing and class names."
    )
    return report


def main(args: Sequence[str]) -> None:
    """``tlkit export`` with user errors as one line (``TLKIT_TRACEBACK=1`` for the traceback)."""
    run_reporting("export", run, args)


if __name__ == "__main__":
    main(sys.argv[1:])
