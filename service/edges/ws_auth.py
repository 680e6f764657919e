"""How a browser WebSocket carries an API key: in `Sec-WebSocket-Protocol`, never in the URL.

Browsers cannot set headers on a WebSocket, and a key in the query string lands in access
logs and proxies. The client offers two subprotocols, `rnnserve` and
`rnnserve.key.<the key, base64url without padding>`; the server answers `rnnserve` (a browser
drops a socket whose offered protocols got no answer). Header-capable clients keep using
`Authorization: Bearer <key>` or `X-API-Key`.
"""

from __future__ import annotations

import base64
import binascii

from starlette.types import Scope

PROTOCOL = "rnnserve"
KEY_PROTOCOL_PREFIX = "rnnserve.key."
# 4000 + the HTTP status, as the stream's other closes: a client treats it like REST's 401
CLOSE_UNAUTHORIZED = 4401


def offered_protocols(scope: Scope) -> list[str]:
    """The subprotocols the client offered, in its order."""
    return [str(p) for p in scope.get("subprotocols", [])]


def chosen_protocol(scope: Scope) -> str | None:
    """The subprotocol to accept the socket with: `rnnserve` when offered, else none."""
    return PROTOCOL if PROTOCOL in offered_protocols(scope) else None


def key_from_protocols(scope: Scope) -> str | None:
    """The API key offered as `rnnserve.key.<base64url>`, or None (absent or undecodable)."""
    for protocol in offered_protocols(scope):
        if protocol.startswith(KEY_PROTOCOL_PREFIX):
            encoded = protocol[len(KEY_PROTOCOL_PREFIX) :]
            try:
                padded = encoded + "=" * (-len(encoded) % 4)
                return base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
            except (binascii.Error, UnicodeError, ValueError):
                return None
    return None
