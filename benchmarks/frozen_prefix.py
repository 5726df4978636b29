"""Frozen-prefix savings: step time and memory with only the top layer groups trainable versus all of them.

Autograd records nothing below the lowest trainable parameter, so a frozen prefix costs neither activation memory
nor backward compute. Each configuration runs in its own process so that its peak RSS is its own.

    python benchmarks/frozen_prefix.py [--backbone tf_efficientnet_lite0] [--image-size 128] [--batch-size 32]

Prints a Markdown table and writes benchmarks/results/frozen_prefix.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from _common import machine, parse_args, smoke, table, write_json


def measure(backbone: str, trainable_groups: int, image_size: int, batch_size: int, steps: int) -> dict:
    from tlkit.strategies import FineTuning

    torch.manual_seed(0)
    model = FineTuning(backbone, weights=None, num_classes=10, trainable_groups=trainable_groups)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    x = torch.randn(batch_size, 3, image_size, image_size)
    y = torch.randint(0, 10, (batch_size,))

    saved_bytes = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved_bytes
        saved_bytes += tensor.numel() * tensor.element_size()
        return tensor

    times = []
    for step in range(steps + 2):  # two warm-up steps
        saved_bytes = 0
        started = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model.loss(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= 2:
            times.append(time.perf_counter() - started)
    groups = len(model.backbone.layer_groups)
    return {
        "trainable_groups": trainable_groups,
        "groups": groups,
        "step_ms_median": 1000 * statistics.median(times),
        "saved_activations_mib": saved_bytes / 2**20,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parse_args(parser, {"image_size": 32, "batch_size": 4, "steps": 1})
    if args.child is not None:
        print(json.dumps(measure(args.backbone, args.child, args.image_size, args.batch_size, args.steps)))
        return

    from tlkit.backbones import Backbone

    n = len(Backbone(args.backbone, weights=None).layer_groups)
    rows = []
    for trainable in (0, 1, n // 2, n):
        if smoke():  # in this process: its peak memory means nothing, the rest of the table keeps its shape
            rows.append(measure(args.backbone, trainable, args.image_size, args.batch_size, args.steps))
            continue
        # A process per setting, so that each peak memory is its own.
        command = [sys.executable, __file__, "--child", str(trainable)] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("child", "smoke")
        ]
        rows.append(json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout))
    full = rows[-1]
    lines = []
    for r in rows:
        label = "head only" if r["trainable_groups"] == 0 else f"top {r['trainable_groups']} of {r['groups']}"
        time_ratio = r["step_ms_median"] / full["step_ms_median"]
        memory_ratio = r["saved_activations_mib"] / full["saved_activations_mib"]
        lines.append(
            [
                label,
                f"{r['step_ms_median']:.0f} ms",
                f"{time_ratio:.2f}x",
                f"{r['saved_activations_mib']:.1f} MiB",
                f"{memory_ratio:.2f}x",
                f"{r['peak_rss_mib']:.0f} MiB",
            ]
        )
    print(f"\nFrozen prefix: FineTuning {args.backbone}, {args.image_size} px, batch {args.batch_size} ({machine()})")
    header = ["trainable groups", "step time (median)", "vs all", "saved activations", "vs all", "peak RSS"]
    print(table(header, lines))
    print(f"JSON: {write_json('frozen_prefix', {'args': vars(args), 'rows': rows})}")


if __name__ == "__main__":
    main()
