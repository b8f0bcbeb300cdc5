"""How much faster is bf16 autocast than fp32 on this CPU? Training steps and inference, one run, interleaved.

Builds a backbone from its config (random weights, random images: only the speed is measured), then times
rounds of SGD steps and of inference batches in fp32 and under ``torch.autocast("cpu", torch.bfloat16)``,
taking turns so that whatever else the machine runs weighs on both alike, and prints one JSON line of
images per second and the bf16 / fp32 ratios. The ratio is what a CPU with native bf16 (AMX, AVX512-BF16)
would gain from ``precision=bf16``; without native bf16 the kernels emulate it and the ratio can fall
below 1 (we have not had such a CPU to measure).

    python scripts/precision_probe.py                                  # resnet_narrow, batch 128, 1 thread
    python scripts/precision_probe.py --backbone resnet18 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn
from omegaconf import OmegaConf

from famr_cli.backbone import build_backbone
from famr_cli.host import cpu_flags, cpu_name

CONF = Path(__file__).resolve().parents[1] / "conf" / "backbone"
# The CPU flags that give bf16 its own instructions (none: bf16 is emulated).
NATIVE_BF16 = {"amx_bf16", "avx512_bf16"}


def images_per_second(step, batch: int, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet_narrow", help="a conf/backbone/<name>.yaml")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = OmegaConf.load(CONF / f"{args.backbone}.yaml")
    model = build_backbone(cfg, 10, 3, args.image_size).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))

    def train_step(bf16: bool):
        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step

    def infer_step(bf16: bool):
        def step():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model(x)

        return step

    speeds: dict[str, list[float]] = {"train_fp32": [], "train_bf16": [], "infer_fp32": [], "infer_bf16": []}
    for stage, make in (("train", train_step), ("infer", infer_step)):
        model.train(stage == "train")
        for bf16 in (False, True):  # warm-up: oneDNN picks its kernels on the first calls
            images_per_second(make(bf16), args.batch, 2)
        for _ in range(args.rounds):
            for bf16 in (False, True):
                speeds[f"{stage}_{'bf16' if bf16 else 'fp32'}"].append(images_per_second(make(bf16), args.batch, args.steps))

    median = {name: round(statistics.median(values)) for name, values in speeds.items()}
    print(
        json.dumps(
            {
                "backbone": args.backbone,
                "batch": args.batch,
                "threads": args.threads,
                "cpu": cpu_name(),
                "native_bf16": sorted(cpu_flags() & NATIVE_BF16),
                "torch": torch.__version__,
                "images_per_s_median": median,
                "train_bf16_over_fp32": round(median["train_bf16"] / median["train_fp32"], 2),
                "infer_bf16_over_fp32": round(median["infer_bf16"] / median["infer_fp32"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
