"""What ``make reproduce`` runs, as data: one :class:`Profile` per scale.

A profile names the experiments (``conf/experiment/*.yaml``), the methods (``method=`` options), the
seeds and how they are varied, the λ values of FAMR's trade-off sweep and any extra overrides. The
runner turns each profile into ``famr-run -m`` command lines; nothing here runs anything.

Seeds (our choice for ``cpu``): ``paper`` varies the top-level ``seed``, so every seed trains its own
original model and Retrain reference, the standard practice. ``cpu`` cannot afford that on 2 cores in an
hour: it pins ``train.seed=0`` (part of the original's and Retrain's cache key) and sweeps ``seed`` (the
unlearning's batch order, random labels, MIA subsample), so one original and one Retrain serve every seed
and the ± measures the unlearning's randomness alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import yaml

from famr_cli.config_schema import CONFIG_DIR

# Every method of the comparison: adding a name here is all a method needs to run in famr-reproduce (its
# sweeps, its row, --methods). The tables list Retrain first and group the others by the data they read.
ALL_METHODS = (
    "retrain",
    "famr",
    # FAMR's named variants (ours): each its own row, labelled by what it changes.
    "famr_entropy",
    "famr_head",
    "famr_retain_kd",
    "finetune",
    "grad_ascent",
    "random_label",
    "l1_sparse",
    "salun",
    "ssd",
    "scrub",
    "neggrad_plus",
    "bad_teacher",
    "cf_k",
    "eu_k",
    "boundary_shrink",
    "boundary_expand",
    "unsir",
    "fisher",
    "jit",
)
# FAMR's λ sweep: one point per decade of famr-tune's λ range (0.01-1000). The anchor only starts to hold
# the model once λ reaches the tens (the measurement behind that range: famr_cli/tune/spaces/default.yaml).
LAMBDAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)

# How seeds are varied (Profile.seed_mode).
FULL = "full"  # the top-level `seed`: each seed trains its own original model and Retrain reference
UNLEARNING = "unlearning"  # `train.seed` pinned: one original and one Retrain, each seed only re-runs the unlearning


@dataclass(frozen=True)
class ForgetTable:
    """One table of a profile: a forget spec (its overrides) and the title its table gets."""

    name: str  # the sweep folder's and the table file's suffix ("" for class forgetting, the historical layout)
    title: str
    overrides: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """What ``famr-reproduce --tables`` calls it."""
        return self.name or "class"

    @property
    def spec(self) -> str:
        """The forget spec its jobs run (``forget=<spec>``): its override's, else conf/config.yaml's and every experiment's class."""
        chosen = [o.split("=", 1)[1] for o in self.overrides if o.startswith("forget=")]
        return chosen[-1] if chosen else "class"


CLASS_TABLE = ForgetTable("", "Class forgetting")
# SalUn's protocol (Fan et al., ICLR 2024, Table 1): 10 % of the training set drawn at random, Retrain on the other 90 %.
SAMPLE_TABLE = ForgetTable("sample", "Random 10 % sample forgetting", ("forget=sample", "forget.fraction=0.1"))


@dataclass(frozen=True)
class Profile:
    """One reproduction scale. ``doc`` says what it costs and which choices are ours."""

    name: str
    doc: str
    experiments: tuple[str, ...]
    methods: tuple[str, ...] = ALL_METHODS
    seeds: tuple[int, ...] = (0, 1, 2)
    seed_mode: str = FULL
    train_seed: int = 0  # the pinned train.seed when seed_mode == UNLEARNING
    lambdas: tuple[float, ...] = LAMBDAS
    lambda_seed: int = 0
    overrides: tuple[str, ...] = ()  # added to every famr-run command of this profile
    lambda_overrides: tuple[str, ...] = ()  # added to FAMR's λ sweep alone (where every job is FAMR: method.<key>=...)
    hidden: bool = False  # not offered by the CLI's --help (test-only profiles)
    allow_download: bool = True  # CIFAR-10 may come from a torchvision download when no local copy exists
    # One methods table per forget spec, per experiment; by default both protocols, like the paper's.
    forget_tables: tuple[ForgetTable, ...] = (CLASS_TABLE, SAMPLE_TABLE)
    # --privacy: famr-privacy's populations (docs/privacy.md) on class forgetting, N models each; 0 = not offered.
    privacy_models: int = 0
    privacy_protocols: tuple[str, ...] = ("competition",)

    def with_seeds(self, n: int) -> Profile:
        return replace(self, seeds=tuple(range(n)))

    def with_experiments(self, experiments: tuple[str, ...]) -> Profile:
        return replace(self, experiments=experiments)

    def with_methods(self, names: tuple[str, ...]) -> Profile:
        """Only the methods named, in the profile's order."""
        return replace(self, methods=tuple(m for m in self.methods if m in names))

    def with_tables(self, keys: tuple[str, ...]) -> Profile:
        """Only the forget tables named (``class``, ``sample``), in the profile's order."""
        return replace(self, forget_tables=tuple(t for t in self.forget_tables if t.key in keys))

    def seed_overrides(self, seeds: tuple[int, ...]) -> list[str]:
        """The overrides that vary (or pin) the seeds of one sweep."""
        pinned = [f"train.seed={self.train_seed}"] if self.seed_mode == UNLEARNING else []
        return [f"seed={','.join(str(s) for s in seeds)}", *pinned]

    @property
    def lambda_experiment(self) -> str:
        """FAMR's λ sweep runs on the profile's first experiment."""
        return self.experiments[0]


PAPER = Profile(
    name="paper",
    doc=(
        "Paper scale, meant for a GPU: CIFAR-10 with ResNet-18 and ViT-Tiny, ImageNet-100 with ResNet-18; every method, "
        "seeds 0, 1, 2 varying the top-level `seed`, so each seed trains its own original model and Retrain reference "
        "(the standard practice). FAMR's λ sweep runs on cifar10_resnet18, seed 0. Needs CIFAR-10 (a local copy or a "
        "torchvision download) and a local ImageNet (IMAGENET=... or FAMR_IMAGENET_ROOT). The training recipes and FAMR "
        "values of these experiments are untuned starting points (conf/experiment/*.yaml)."
    ),
    experiments=("cifar10_resnet18", "cifar10_vit", "imagenet100_resnet18"),
    seeds=(0, 1, 2),
    seed_mode=FULL,
)

CPU = Profile(
    name="cpu",
    doc=(
        "CIFAR-10 on 2 CPU cores (experiment=cifar10_cpu), every method, 2 seeds, a class-forgetting and a "
        "10 %-random-forgetting table (SalUn's protocol); --resume continues a stopped run. Its cost follows the methods' "
        "values: 81 min from an empty cache on 2 fast cores with the withdrawn 4-trial values, several hours at the "
        "official recipes' 10 epochs over D_r (docs/sweeps.md). Our choice, to keep it affordable: only the unlearning seed varies. "
        "`train.seed=0` is pinned (it is part of the original model's and Retrain's cache key) and `seed=0,1` is swept "
        "(it drives the unlearning's batch order, random labels, the MIA subsample, ...), so the original model and the "
        "class Retrain are trained once and every method runs twice from the same original. The ± therefore covers the "
        "unlearning's randomness only, not the original model's, and the class Retrain's row repeats one model (std 0); "
        "in the 10 % table `seed` also draws the forget set (forget.seed), so each seed has its own D_f and Retrain. "
        "CIFAR-10 must be on disk (DATA=... or FAMR_CIFAR10_ROOT or "
        "the shared copy); --allow-download lets torchvision fetch it instead. FAMR's λ sweep runs on seed 0."
    ),
    experiments=("cifar10_cpu",),
    seeds=(0, 1),
    seed_mode=UNLEARNING,
    allow_download=False,
    # Ours: N = 16 under the competition protocol alone. Its 32 Retrains are most of the cost (docs/privacy.md);
    # the full protocol would add 16 originals.
    privacy_models=16,
)

SMOKE = Profile(
    name="smoke",
    doc=(
        "Test-only: the quickstart on digits with 2 training epochs, FAMR, GA and Retrain, 2 seeds (the cpu profile's "
        "unlearning-seed scheme), a three-value λ sweep of FAMR at 20 steps (its tuned value is far more); the whole pipeline end to end "
        "in about a minute. GA stands for the baselines because it steps on D_f alone (5 steps on digits), where FT's "
        "30 epochs over D_r would be most of the run."
    ),
    experiments=("quickstart",),
    methods=("retrain", "famr", "grad_ascent"),
    seeds=(0, 1),
    seed_mode=UNLEARNING,
    lambdas=(0.01, 0.1, 1.0),
    overrides=("train.epochs=2",),
    lambda_overrides=("method.epochs=20",),
    forget_tables=(CLASS_TABLE,),  # one table keeps the test run short
    privacy_models=4,
    privacy_protocols=("competition", "full"),
    hidden=True,
)

PROFILES: dict[str, Profile] = {p.name: p for p in (PAPER, CPU, SMOKE)}


def public_profiles() -> list[str]:
    return [name for name, p in PROFILES.items() if not p.hidden]


def experiment_names() -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


def dataset_of(experiment: str) -> str:
    """The dataset option an experiment selects (its ``override /dataset: ...`` default)."""
    path = CONFIG_DIR / "experiment" / f"{experiment}.yaml"
    for item in (yaml.safe_load(path.read_text()) or {}).get("defaults", []):
        if isinstance(item, dict):
            for key, value in item.items():
                if key.split()[-1].lstrip("/") == "dataset":
                    return str(value)
    return "digits"  # conf/config.yaml's default
