"""The Open Inference Protocol (V2) without HTTP: wire codec, model contract, infer calls."""
