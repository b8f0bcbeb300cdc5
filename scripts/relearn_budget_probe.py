"""Why the relearning attack's default budget is what it is: the attack at several learning rates on
the cached original and Retrain of an experiment (nothing is trained; both must be in the cache).

    python scripts/relearn_budget_probe.py experiment=cifar10_cpu dataset.root=../shared/data/cifar10-jpeg.tar.gz

An attack worth reporting leaves Retrain (which never saw the class) short of saturation and the
retained accuracy standing; one that drives every model to 100 % on the forgotten images measures
nothing. Prints, per lr, mode and k: accuracy on the forgotten held-out images and on the retained
ones after the attack, for both models. The figures are quoted in docs/robustness.md.
"""

from __future__ import annotations

import os
import sys
import time

from hydra import compose, initialize_config_dir

from famr_cli.assessment import robustness_run
from famr_cli.cli import CONFIG_DIR
from famr_cli.evaluate.certificate.head import head_features
from famr_cli.evaluate.robustness.base import ModelView
from famr_cli.evaluate.robustness.relearn import Relearn
from famr_cli.evaluate.robustness.run import RobustnessSettings
from famr_cli.logger import ExperimentLogger
from famr_cli.model_store import get_original_model, get_retrain_model
from famr_cli.prepared import prepare

LRS = tuple(float(v) for v in os.environ.get("PROBE_LRS", "1e-4,3e-4,1e-3,3e-3,1e-2,3e-2").split(","))
WITH_RETAINED = (True, False) if os.environ.get("PROBE_MIXED", "both") == "both" else (os.environ["PROBE_MIXED"] == "yes",)


def main(overrides: list[str]) -> int:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    p = prepare(cfg)
    logger = ExperimentLogger()
    models = {
        "original": get_original_model(cfg, p, logger, False).model,
        "retrain": get_retrain_model(cfg, p, logger).model,
    }
    settings = RobustnessSettings(p.eval.robustness.holdout_per_class, (Relearn(),))
    run = robustness_run(cfg, p, settings)
    ctx = run.context()
    print(f"forgotten images scored: {len(ctx.sets.forget_y)}, retained: {len(ctx.sets.retain_y)}; steps 10, momentum 0.9")
    print(
        "| lr | model | forgotten before | "
        + " | ".join(f"{m} k={k} forgotten / retained" for k in (5, 25) for m in ("full", "head"))
        + " |"
    )
    print("|---|---|---|" + "---|" * 4)
    for with_retained, lr in [(w, lr) for w in WITH_RETAINED for lr in LRS]:
        check = Relearn(shots=(5, 25), steps=10, lr=lr, with_retained=with_retained)
        for name, model in models.items():
            start = time.perf_counter()
            figures = check.measure(_features_view(name, model, ctx), ctx)
            cells = [
                f"{figures[f'{m}_k{k}_forget_acc']:.1f} / {figures[f'{m}_k{k}_retain_acc']:.1f}" for k in (5, 25) for m in ("full", "head")
            ]
            print(
                f"| {lr:g} | {name} | {figures['forget_acc_before']:.1f} | "
                + " | ".join(cells)
                + f" | ({time.perf_counter() - start:.1f} s)"
            )
    return 0


def _features_view(name, model, ctx) -> ModelView:
    view = ModelView(name, model)
    for set_name in ("pool", "forget", "retain", "anchor"):
        view.features[set_name] = head_features(model, ctx.batches(getattr(ctx.sets, f"{set_name}_x"))).cpu()
    return view


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
