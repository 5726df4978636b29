"""``tlkit serve``: answer predictions over HTTP with LitServe, from a checkpoint or an export folder.

tlkit serve --ckpt_path logs/digits_finetune/version_0/checkpoints/last.ckpt
tlkit serve --model_dir exported/digits --port 8080 --max_batch_size 16 --batch_timeout 0.01
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Literal

from tlkit.cli._subcommand import SubcommandParser, run_reporting, subcommand_parser
from tlkit.errors import config_error, import_optional


def build_parser() -> SubcommandParser:
    parser = subcommand_parser("serve", __doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", type=str | None, default=None, help="A checkpoint of any tlkit strategy.")
    parser.add_argument(
        "--model_dir", type=str | None, default=None, help="A `tlkit export` folder (served with ONNX Runtime)."
    )
    parser.add_argument("--host", type=str, default="127.0.0.1", help="The address to listen on (0.0.0.0: every one).")
    parser.add_argument("--port", type=int, default=8000, help="The port to listen on.")
    parser.add_argument(
        "--max_batch_size", type=int, default=1, help="Requests gathered into one forward pass (1: no batching)."
    )
    parser.add_argument("--batch_timeout", type=float, default=0.0, help="Seconds to wait for a batch to fill.")
    parser.add_argument(
        "--accelerator", type=Literal["auto", "cpu", "cuda", "mps"], default="auto", help="Where the model runs."
    )
    parser.add_argument("--devices", type=int | Literal["auto"], default="auto", help="How many devices to use.")
    parser.add_argument("--workers_per_device", type=int, default=1, help="Model copies per device.")
    parser.add_argument("--top_k", type=int, default=3, help="Classes a classifier's answer lists.")
    parser.add_argument("--max_items", type=int, default=64, help="Inputs one request may hold.")
    parser.add_argument("--max_request_mb", type=float, default=32.0, help="The largest request body, in MB.")
    parser.add_argument("--timeout", type=float, default=60.0, help="Seconds a request may wait for its answer.")
    return parser


def run(args: Sequence[str]) -> None:
    config = build_parser().parse_args(list(args))
    at_least_one = {"max_batch_size": config.max_batch_size, "workers_per_device": config.workers_per_device}
    at_least_one.update(top_k=config.top_k, max_items=config.max_items)
    for name, value in at_least_one.items():
        if value < 1:
            raise config_error(name, "an integer >= 1", value)
    if config.batch_timeout < 0:
        raise config_error("batch_timeout", "a number >= 0", config.batch_timeout)
    for name, value in {"max_request_mb": config.max_request_mb, "timeout": config.timeout}.items():
        if not value > 0:
            raise config_error(name, "a number > 0", value)
    import_optional("litserve", "to serve", "serve")
    import_optional("multipart", "to read form uploads", "serve")
    from tlkit.engines.served_models import load_served_model
    from tlkit.engines.serving import serve

    # Loaded here first: a model that cannot load stops the command in one line, before any worker starts.
    model = load_served_model(config.ckpt_path, config.model_dir, "cpu", config.top_k)
    serve(model, config)


def main(args: Sequence[str]) -> None:
    """``tlkit serve`` with user errors as one line (``TLKIT_TRACEBACK=1`` for the traceback)."""
    run_reporting("serve", run, args)


if __name__ == "__main__":
    main(sys.argv[1:])
