"""Everything about a finished or running multirun: its jobs, its summary files and plots, the Hydra callback."""
