"""One module per phase of `run.py --only`; each runs its configurations interleaved and returns
the raw samples that harness.evaluation turns into rows."""
