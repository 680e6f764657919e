"""The core: model repository, onnxruntime runner, batching, recurrent state, session stores.

Plain Python, numpy and onnxruntime: no HTTP and nothing from the layers above.
"""
