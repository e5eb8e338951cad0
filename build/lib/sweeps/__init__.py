"""The seeds' studies as runnable sweeps: one yaml per table (`sweeps/<name>.yaml`), run with
`python -m sweeps run <name>`, tabled with `python -m analysis table --experiment <experiment>`."""
