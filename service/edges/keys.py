"""API keys: who presented which key, for the HTTP middleware and the gRPC edge alike."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence


def key_fingerprint(key: str) -> str:
    """A stable, non-reversible id for an API key: sessions record this, never the key."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def identify_key(
    authorization: str | None, api_key: str | None, keys: Sequence[bytes]
) -> str | None:
    """The fingerprint of the key presented (`Bearer <key>` or X-API-Key), None if unknown."""
    presented = api_key
    auth = authorization or ""
    if presented is None and auth[:7].lower() == "bearer ":
        presented = auth[7:].strip()
    if not presented:
        return None
    candidate = presented.encode()
    # compare against every key so the time taken does not reveal which one matched
    matched = [hmac.compare_digest(candidate, key) for key in keys]
    return key_fingerprint(presented) if any(matched) else None
