"""Predict: B=1 T=50 at concurrency 1 and 32 (v1 JSON, V2 JSON, V2 binary), mixed lengths."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from bench.checks import Check, Outcome, check_v1_predict, check_v2
from bench.harness import PYTRITON, Harness
from bench.loadgen.closedloop import LoadResult
from bench.loadgen.post import Window, run_post_load
from bench.loadgen.wrk import PostLoad
from bench.model import (
    MIXED_MAX_STEPS,
    PREDICT_STEPS,
    Array,
    sequence,
    v1_predict_body,
    v2_binary_body,
    v2_json_body,
)
from bench.report import RNNSERVE, Row, unavailable
from bench.rounds import Prepared, Target, run_targets

V1, V2_JSON, V2_BINARY = "v1 JSON", "V2 JSON", "V2 binary"
BARE_CHECK = Check(Outcome.OK, "not checked: answers a constant by design (framework ceiling)")
PREDICT_TARGETS = (
    (RNNSERVE, V1), (RNNSERVE, V2_JSON), (RNNSERVE, V2_BINARY), ("textbook", V1),
    ("hand-tuned", V1), ("bare", V1), (PYTRITON, V2_JSON), (PYTRITON, V2_BINARY),
)  # fmt: skip
PROFILED = (RNNSERVE, "hand-tuned")  # with --profile: rnnserve, and the baseline it must beat
MIXED_TARGETS = ((RNNSERVE, V1), ("textbook", V1), ("hand-tuned", V1), ("bare", V1))


def post_load(h: Harness, protocol: str, xs: list[Array], concurrency: int) -> PostLoad:
    """The load's route, bodies (round-robin) and headers for one protocol."""
    name = h.model.name
    if protocol == V1:
        return PostLoad(f"/v1/models/{name}/predict", [v1_predict_body(x) for x in xs], concurrency)
    path = f"/v2/models/{name}/infer"
    if protocol == V2_JSON:
        return PostLoad(path, [v2_json_body(x) for x in xs], concurrency)
    framed = [v2_binary_body(x) for x in xs]
    header_lengths = {f.header_length for f in framed}
    if len(header_lengths) != 1:
        raise ValueError("binary bodies of one load must share one header length")
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(header_lengths.pop()),
    }
    return PostLoad(path, [f.body for f in framed], concurrency, headers)


def _checker(
    h: Harness, server: str, protocol: str, xs: list[Array]
) -> Callable[[], Awaitable[Check]]:
    port = h.servers[server].spec.port
    name = h.model.name
    if server == "bare":
        return lambda: _constant(BARE_CHECK)
    if protocol == V1:
        return lambda: check_v1_predict(port, name, h.reference, xs)
    return lambda: check_v2(port, name, h.reference, xs[0], binary=protocol == V2_BINARY)


async def _constant(check: Check) -> Check:
    return check


def _why_unavailable(h: Harness, server: str, protocol: str) -> str | None:
    if server not in h.servers:
        return h.missing.get(server, f"{server} was not started")
    if server == RNNSERVE and protocol != V1 and "v2" not in h.routes:
        return "rnnserve offers no POST /v2/models/{name}/infer route yet"
    return None


def predict_target(
    h: Harness, scenario: str, server: str, protocol: str, xs: list[Array], concurrency: int
) -> Target | Row:
    """One server/protocol's closed-loop load at `concurrency`, or its n/a row."""
    why = _why_unavailable(h, server, protocol)
    if why:
        return unavailable(scenario, server, protocol, why)
    kind = "mixed" if scenario == "predict_mixed" else "T50"
    load = post_load(h, protocol, xs, concurrency)
    target = h.servers[server]
    workdir = h.out_dir / "wrk" / re.sub(r"\W+", "-", f"{scenario}-{server}-{protocol}")
    profiled = server in PROFILED and (protocol, scenario) == (V1, "predict_c32")

    async def prepare() -> Prepared:
        async def run(window: Window) -> LoadResult:
            return await run_post_load(
                load, port=target.spec.port, window=window, workdir=workdir, preference=h.generator
            )

        return Prepared(run, _nothing)

    return Target(
        scenario=scenario,
        label=server,
        protocol=protocol,
        server=target,
        unit="req/s",
        check_key=f"{server} {protocol} {kind}",
        check=_checker(h, server, protocol, xs[:3]),
        prepare=prepare,
        batch_kind="predict" if server == RNNSERVE else None,
        profile_name=f"{scenario}-{server}" if profiled else None,
    )


async def _nothing() -> None:
    return None


async def predict_at(h: Harness, scenario: str, concurrency: int) -> list[Row]:
    """B=1 T=50 on every server and protocol at one concurrency."""
    xs = [sequence(h.rng, PREDICT_STEPS) for _ in range(8)]
    targets = [predict_target(h, scenario, s, p, xs, concurrency) for s, p in PREDICT_TARGETS]
    return await run_targets(h, targets)


async def predict_mixed(h: Harness) -> list[Row]:
    """B=1 sequences of 1..300 steps (uniform), concurrency 32."""
    lengths = [1, MIXED_MAX_STEPS, 137, *h.rng.integers(1, MIXED_MAX_STEPS + 1, size=61).tolist()]
    xs = [sequence(h.rng, int(n)) for n in lengths]
    targets = [predict_target(h, "predict_mixed", s, p, xs, 32) for s, p in MIXED_TARGETS]
    return await run_targets(h, targets)
