"""How much glibc's allocator settings matter for CPU training steps (famr_cli.runtime.keep_freed_memory).

Runs the same resnet_narrow training steps in fresh processes, taking turns between glibc's defaults
(FAMR_MALLOC_TUNING=0) and famr's settings, and prints images/s of each and their ratio. Run it alone:
a second torch process on the same cores distorts both.

    python scripts/bench_allocator.py [--rounds 3] [--steps 30] [--batch 128] [--size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time, torch
from omegaconf import OmegaConf
from famr_cli.backbone import build_backbone
from famr_cli.runtime import keep_freed_memory
tuned = keep_freed_memory()
steps, batch, size = map(int, sys.argv[1:4])
cfg = OmegaConf.load(sys.argv[4])
model = build_backbone(cfg, 10, 3, size).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (batch,))
for step in range(steps + 5):
    if step == 5:
        start = time.perf_counter()
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
print(json.dumps({"tuned": tuned, "images_per_s": steps * batch / (time.perf_counter() - start)}))
"""


def run(mode: str, args) -> float:
    env = {**os.environ, "FAMR_MALLOC_TUNING": mode}
    conf = os.path.join(os.path.dirname(__file__), "..", "conf", "backbone", "resnet_narrow.yaml")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(args.steps), str(args.batch), str(args.size), conf],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    figures: dict[str, list[float]] = {"0": [], "1": []}
    for _ in range(args.rounds):
        for mode in ("0", "1"):
            figures[mode].append(run(mode, args))
    default, tuned = statistics.median(figures["0"]), statistics.median(figures["1"])
    print(f"glibc defaults:        {default:7.0f} images/s  (runs: {', '.join(f'{v:.0f}' for v in figures['0'])})")
    print(f"keep_freed_memory():   {tuned:7.0f} images/s  (runs: {', '.join(f'{v:.0f}' for v in figures['1'])})")
    print(f"ratio (median):        {tuned / default:7.2f}x")


if __name__ == "__main__":
    main()
