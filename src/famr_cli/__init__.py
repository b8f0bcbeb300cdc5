"""famr: a Hydra-driven runner for post-hoc machine unlearning experiments (FAMR and baselines)."""

__version__ = "0.1.0"
