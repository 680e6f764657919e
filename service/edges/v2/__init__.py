"""The Open Inference Protocol (V2) over HTTP: tensor contract, JSON/binary codec, routes."""
