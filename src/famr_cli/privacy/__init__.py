"""Per-example privacy metrics for unlearning, as pure functions on arrays of per-model scores.

``competition``: the NeurIPS 2023 Machine Unlearning competition's per-example epsilon, bucketed forget
score F and final score (Triantafillou et al. 2024). ``ulira``: a U-LiRA-style per-example likelihood-ratio
attack (Hayes et al. 2024). Nothing here trains or loads models: callers pass the scores of N unlearned and
N retrained models on each forget example.
"""
