"""What two or more methods share; registers no method, so no method module imports another.

- :mod:`.settings`: the optimizer options every training method parses and checks, and the BatchNorm mode;
- :mod:`.training`: the optimizer, schedule and BatchNorm mode around the one training loop, fused gradient terms;
- :mod:`.relabel`: random_label's and salun's relabelling of D_f and their passes over D_f and D_r;
- :mod:`.last_layers`: CF-k's and EU-k's training of the last k layers;
- :mod:`.pieces`: a frozen model copy, the run's autocast, the head lookup, mixed seeds.
"""
