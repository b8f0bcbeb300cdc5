"""FAMR's certificate: stationarity and drift on every run, the head's Newton/influence prediction (the convex proof: famr_lab)."""
