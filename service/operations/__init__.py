"""Use cases: predict, streaming sessions, V2 infer. Typed requests in, typed results out.

No wire format here: the edges decode and render; operations call only the core.
"""
