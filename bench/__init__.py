"""The benchmark harness: rnnserve next to baselines measured in one run (`python -m bench`)."""
