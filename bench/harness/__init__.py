"""What bench/run.py runs, one concern a module; bench/README.md ("Code") maps the modules."""
