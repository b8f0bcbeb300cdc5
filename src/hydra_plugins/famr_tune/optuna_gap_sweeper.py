"""Hydra finds sweepers only under ``hydra_plugins``: this adapter hands the work to famr_cli.tune.sweeper."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class OptunaGapSweeper(Sweeper):
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        from famr_cli.errors import FamrError
        from famr_cli.tune.sweeper import run_study, settings_from

        parsed = OverridesParser.create().parse_overrides(arguments)
        if any(o.is_sweep_override() for o in parsed):
            swept = [o.input_line for o in parsed if o.is_sweep_override()]
            raise FamrError(f"hydra/sweeper=optuna_gap searches its own space; drop the swept overrides {swept} (one method per study).")
        kwargs = OmegaConf.to_container(OmegaConf.create(self.kwargs), resolve=True)

        def launch(jobs: list[list[str]], index: int) -> list[Path]:
            returns = self.launcher.launch([tuple(overrides) for overrides in jobs], initial_job_idx=index)
            return [Path(ret.hydra_cfg.hydra.runtime.output_dir) for ret in returns]

        return run_study(settings_from(kwargs), self.config, list(arguments), launch)
