"""``make reproduce``: the paper's class-forgetting tables (FAMR beside every baseline, mean ± std over seeds).

``profiles`` says what to run (experiments, methods, seeds, λ values), ``data`` finds the datasets before
anything starts, ``runner`` launches one ``famr-run -m`` sweep per experiment and seed set, and ``tables``
turns the jobs' results.json files into Markdown, CSV and LaTeX, every method table grouped by the training
data its methods read (:mod:`famr_cli.method_reads`, the one lookup of it, also behind ``famr-run --help``'s
method list). Only that lookup imports torch, to build the methods it asks; the sweeps run in their own processes.
"""
