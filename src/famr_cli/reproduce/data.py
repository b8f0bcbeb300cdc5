"""Data preflight: find every dataset a profile needs before any sweep starts.

A bad or missing path stops ``make reproduce`` at once with one sentence saying how to provide the
data (:class:`DataError`, exit 2), instead of an hour into the run. Only cheap file-system checks:
the loaders themselves (``famr_cli/dataset/``) still validate the contents.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from famr_cli.config_schema import CONFIG_DIR
from famr_cli.reproduce.profiles import Profile, dataset_of

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
TORCHVISION_DIR = "cifar-10-batches-py"
SHARED_CIFAR10 = "cifar10-jpeg.tar.gz"
CIFAR10_HOW = "pass DATA=/path/to/cifar10 (a folder or .tar.gz in the CIFAR layout) or set FAMR_CIFAR10_ROOT"
IMAGENET_HOW = "pass IMAGENET=/path/to/imagenet (a folder with train/ and val/, one folder per WordNet id) or set FAMR_IMAGENET_ROOT"


class DataError(Exception):
    """A dataset the profile needs is missing or malformed; the message is one sentence naming the fix."""


@dataclass
class DataPlan:
    """Per experiment, the ``dataset.*`` overrides to add; notes say where each dataset comes from."""

    overrides: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what would stop a real run (dry runs only)


def hydra_value(text: str) -> str:
    """Quote a path for a Hydra override when it holds characters Hydra's grammar would parse."""
    if all(c.isalnum() or c in "/._-" for c in text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _check_cifar10(path: Path, origin: str) -> Path:
    if not path.exists():
        raise DataError(f"CIFAR-10 not found at {path} ({origin}): {CIFAR10_HOW}.")
    if path.is_file():
        if not path.name.endswith(ARCHIVE_SUFFIXES):
            raise DataError(f"CIFAR-10 at {path} ({origin}) is a file but not a .tar.gz/.tgz/.tar archive: {CIFAR10_HOW}.")
        return path
    looks_right = (
        (path / "train").is_dir()
        or (path / TORCHVISION_DIR).is_dir()
        or path.name == TORCHVISION_DIR
        or any((child / "train").is_dir() for child in path.iterdir() if child.is_dir())
    )
    if not looks_right:
        raise DataError(
            f"CIFAR-10 at {path} ({origin}) has neither train/ and test/ class folders nor torchvision's {TORCHVISION_DIR}: {CIFAR10_HOW}."
        )
    return path


def find_cifar10(data: str | None, repo_root: Path, cache_dir: Path, allow_download: bool) -> tuple[Path | None, str]:
    """The CIFAR-10 source to pass as dataset.root (None: let torchvision download it) and where it came from."""
    if data:
        return _check_cifar10(Path(data).expanduser().resolve(), "DATA / --data"), "DATA / --data"
    env = os.environ.get("FAMR_CIFAR10_ROOT", "").strip()
    if env:
        return _check_cifar10(Path(env).expanduser().resolve(), "FAMR_CIFAR10_ROOT"), "FAMR_CIFAR10_ROOT"
    shared_env = os.environ.get("FAMR_SHARED_DATA", "").strip()
    # The shared copy is JPEG (quality 75): accuracies sit a little below figures on the official release.
    jpeg = "JPEG-compressed, so accuracies sit a little below the official release's"
    candidates = [(Path(shared_env) / SHARED_CIFAR10, f"FAMR_SHARED_DATA; {jpeg}")] if shared_env else []
    candidates.append((repo_root.parent / "shared" / "data" / SHARED_CIFAR10, f"the shared copy; {jpeg}"))
    candidates.append((cache_dir / "downloads", "an earlier torchvision download"))
    for path, origin in candidates:
        if path.is_file() or (path / TORCHVISION_DIR).is_dir():
            return path.resolve(), origin
    if allow_download:
        return None, f"no local copy: torchvision downloads it into {cache_dir / 'downloads'} (needs internet once)"
    raise DataError(
        f"No local CIFAR-10 found (checked DATA, FAMR_CIFAR10_ROOT, FAMR_SHARED_DATA and {repo_root.parent / 'shared' / 'data'}), "
        f"and a torchvision download is the only way left: {CIFAR10_HOW}, or pass --allow-download to let torchvision fetch it."
    )


def imagenet100_classes() -> list[str]:
    return [str(c) for c in yaml.safe_load((CONFIG_DIR / "dataset" / "imagenet100.yaml").read_text())["classes"]]


def find_imagenet(imagenet: str | None) -> tuple[Path, str]:
    """The ImageNet root (train/ and val/ holding the 100 wnid folders) and where it came from."""
    if imagenet:
        value, origin = imagenet, "IMAGENET / --imagenet"
    elif os.environ.get("FAMR_IMAGENET_ROOT", "").strip():
        value, origin = os.environ["FAMR_IMAGENET_ROOT"].strip(), "FAMR_IMAGENET_ROOT"
    else:
        raise DataError(f"ImageNet-100 needs a local ImageNet copy and none was given: {IMAGENET_HOW}.")
    root = Path(value).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"ImageNet not found at {root} ({origin}): {IMAGENET_HOW}.")
    classes = imagenet100_classes()
    for split in ("train", "val"):
        split_dir = root / split
        if not split_dir.is_dir():
            raise DataError(f"ImageNet at {root} ({origin}) has no {split}/ folder: {IMAGENET_HOW}.")
        missing = [c for c in classes if not (split_dir / c).is_dir()]
        if missing:
            raise DataError(
                f"ImageNet at {root} ({origin}) lacks {len(missing)} of the 100 ImageNet-100 class folders in {split}/ "
                f"(e.g. {missing[0]}): {IMAGENET_HOW}."
            )
    return root, origin


def plan_data(
    profile: Profile,
    repo_root: Path,
    cache_dir: Path,
    data: str | None,
    imagenet: str | None,
    allow_download: bool,
    strict: bool = True,
) -> DataPlan:
    """Resolve every dataset of ``profile``'s experiments before anything runs.

    ``strict`` raises :class:`DataError` on the first problem; otherwise (``--dry-run``) the problem
    becomes a note (``plan.problems``) and the override a ``<missing>`` placeholder.
    """
    plan = DataPlan()
    resolved: dict[str, list[str]] = {}
    for experiment in profile.experiments:
        dataset = dataset_of(experiment)
        if dataset not in resolved:
            try:
                if dataset == "cifar10":
                    root, origin = find_cifar10(data, repo_root, cache_dir, allow_download or profile.allow_download)
                    plan.notes.append(f"CIFAR-10: {root or 'torchvision download'} ({origin})")
                    resolved[dataset] = [f"dataset.root={hydra_value(str(root))}" if root else "dataset.root=null"]
                elif dataset == "imagenet100":
                    root, origin = find_imagenet(imagenet)
                    plan.notes.append(f"ImageNet-100: {root} ({origin})")
                    resolved[dataset] = [f"dataset.root={hydra_value(str(root))}"]
                else:
                    resolved[dataset] = []
            except DataError as err:
                if strict:
                    raise
                plan.problems.append(str(err))
                resolved[dataset] = ["dataset.root=<missing>"]
        plan.overrides[experiment] = resolved[dataset]
    return plan
