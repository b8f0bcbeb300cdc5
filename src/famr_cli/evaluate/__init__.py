"""Evaluation: one function scores any model on any forget split; every method is judged by it."""
