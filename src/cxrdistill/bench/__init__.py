"""Benchmarks: each area module defines ``run(quick: bool) -> list[dict]`` rows measured side by side in one run."""
AREAS = ["distill", "teacher", "audit", "feature_audit", "store", "images", "synth", "fairness"]
