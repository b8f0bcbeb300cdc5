"""FAMR's certificate: per-run stationarity and drift figures, the head's Newton/influence prediction, the convex proof."""
