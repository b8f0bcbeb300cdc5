"""Does a training recipe put the CPU profile in the paper's regime? Train once, print train/test accuracy.

Trains resnet_narrow (or the widths given) on a class-balanced subset of CIFAR-10 with famr's own
training loop and prints one JSON line: the recipe, training seconds, accuracy on the training rows it
fit and on the test set. The paper regime needs train >= 98 % (the original interpolates its data, so
a membership attack has something to find) with test >= 72 % in <= 15 minutes on 2 cores.

    python scripts/cpu_recipe_probe.py --data ../shared/data/cifar10-jpeg.tar.gz --per-class 3000 --epochs 12
    python scripts/cpu_recipe_probe.py --data ... --per-class 2000 --epochs 18 --hflip
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from famr_cli.augment import normalize
from famr_cli.backbone import build_backbone
from famr_cli.dataset import load_dataset
from famr_cli.runtime import keep_freed_memory
from famr_cli.train.classifier import fit_classifier
from famr_cli.train.settings import TrainSettings


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, mean, std, batch: int = 500) -> float:
    mean, std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = normalize(x[i : i + batch], mean, std).contiguous(memory_format=torch.channels_last)
            correct += int((model(xb).argmax(1) == y[i : i + batch]).sum())
    return 100 * correct / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="CIFAR-10 folder or .tar.gz in the CIFAR layout")
    parser.add_argument("--per-class", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--channels", default="16,32,64,128")
    parser.add_argument("--hflip", action="store_true")
    parser.add_argument("--crop-padding", type=int, default=0)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "famr-probe-cache"))
    args = parser.parse_args()
    keep_freed_memory()
    dataset = OmegaConf.create(
        {"name": "cifar10", "root": args.data, "download_dir": None, "img_size": 32, "train_per_class": args.per_class}
    )
    data = load_dataset(dataset, Path(args.cache_dir))
    backbone = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "backbone" / "resnet_narrow.yaml")
    backbone.kwargs.channels = [int(c) for c in args.channels.split(",")]
    torch.manual_seed(0)
    model = build_backbone(backbone, data.num_classes, data.in_chans, data.img_size).to(memory_format=torch.channels_last)
    recipe = OmegaConf.create(
        {
            "optimizer": "sgd",
            "lr": args.lr,
            "momentum": 0.9,
            "nesterov": True,
            "weight_decay": args.weight_decay,
            "schedule": "cosine",
            "warmup_epochs": 1,
            "epochs": args.epochs,
            "batch_size": 128,
            "label_smoothing": args.label_smoothing,
            "grad_clip": None,
            "seed": 0,
            "augment": {"crop_padding": args.crop_padding, "hflip": args.hflip, "padding_mode": "zeros", "cutout": 0},
        }
    )
    start = time.perf_counter()
    fit_classifier(
        model,
        data,
        None,
        TrainSettings.from_config(recipe),
        torch.device("cpu"),
        on_epoch_end=lambda e, loss: print(f"epoch {e + 1} loss {loss:.3f}", flush=True),
    )
    seconds = time.perf_counter() - start
    model.eval()
    figures = {
        "per_class": args.per_class,
        "epochs": args.epochs,
        "channels": args.channels,
        "hflip": args.hflip,
        "crop_padding": args.crop_padding,
        "label_smoothing": args.label_smoothing,
        "train_s": round(seconds),
        "train_acc": round(accuracy(model, data.x_train, data.y_train, data.mean, data.std), 2),
        "test_acc": round(accuracy(model, data.x_test, data.y_test, data.mean, data.std), 2),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
