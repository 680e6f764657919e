"""The v1 HTTP API: routes, the JSON codec, request plumbing."""
