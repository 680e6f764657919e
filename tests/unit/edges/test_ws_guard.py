"""The WebSocket guard's pieces without a socket: token buckets and message sizes."""

from __future__ import annotations

import pytest

from service.edges.ws_guard import KeyRates, TokenBucket, message_bytes
from tests.support.clock import ManualClock


def test_a_bucket_allows_one_seconds_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(4.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [0.0] * 4
    assert bucket.take(0.0) == pytest.approx(0.25)
    assert bucket.take(0.25) == 0.0  # one token back after 1/rate seconds
    assert bucket.take(0.25) > 0


def test_a_slow_rate_still_allows_one_message() -> None:
    bucket = TokenBucket(0.5, now=0.0)
    assert bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == pytest.approx(2.0)


def test_key_buckets_are_per_owner() -> None:
    clock = ManualClock()
    rates = KeyRates(1.0, clock=clock)
    assert rates.take("a") == 0.0
    assert rates.take("a") > 0
    assert rates.take("b") == 0.0
    assert [rates.take(None) for _ in range(5)] == [0.0] * 5  # keys off: no per-key budget
    clock.advance(1.0)
    assert rates.take("a") == 0.0


def test_message_size_counts_utf8_bytes_of_text_and_raw_bytes() -> None:
    assert message_bytes({"type": "websocket.receive", "text": "abc"}) == 3
    assert message_bytes({"type": "websocket.receive", "text": "é" * 10}) == 20
    assert message_bytes({"type": "websocket.receive", "bytes": b"\x00" * 7}) == 7
    assert message_bytes({"type": "websocket.receive", "bytes": None, "text": None}) == 0
