"""Baseline servers that serve the benchmark ONNX the way people usually do without rnnserve."""
