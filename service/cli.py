"""`rnnserve serve|models|verify` here; `export`, `train` and `bench` hand over to their packages.

The service never imports torch: the offline commands run `python -m export` / `python -m bench`
in place of this process, so they need the `[export]` extra only when actually used.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import resource
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
import uvicorn
from pydantic import ValidationError

from service.errors import RepositoryError
from service.settings import LogFormat, Settings

log = logging.getLogger("rnnserve")

HANDED_OVER = {"export": "export", "train": "export", "bench": "bench"}
# Young collections every 10k net allocations instead of 700. Each live WebSocket holds ~240
# tracked objects (the ASGI coroutine chain) and each step's record lives until the stream's
# next step, so with 1,024 streams CPython's defaults ran a collection every ~0.7k allocations
# over a heap that grows with the number of streams, and found nothing to free: 10-20% of the
# server's CPU at 1,024 streams (bench streams1024_ws, py-spy and gc.callbacks). 50k (and
# 20 young collections per older one) let cyclic garbage pile up instead: a 2-minute
# `bench.soak` grew from 113 to 175 MiB RSS (118 MiB with CPython's defaults, 128 at 10k).
GC_THRESHOLDS = (10_000, 10, 10)


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="serve the model repository over HTTP")
    serve.add_argument("--repository", type=Path)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--providers", help="comma-separated onnxruntime execution providers")
    serve.add_argument("--intra-op-threads", type=int)
    serve.add_argument("--max-batch-size", type=int)
    serve.add_argument("--max-queue-delay-ms", type=float)
    serve.add_argument("--session-store", help="memory, or redis://host:port/db")
    serve.add_argument("--session-ttl-s", type=float)
    serve.add_argument("--log-level")
    serve.add_argument("--log-format", choices=[f.value for f in LogFormat])
    serve.add_argument(
        "--strict", action="store_true", default=None, help="refuse to start if any model is broken"
    )


def build_parser() -> argparse.ArgumentParser:
    """The `rnnserve` command line."""
    parser = argparse.ArgumentParser(prog="rnnserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    models = sub.add_parser("models", help="list the repository and each model's status")
    models.add_argument("--repository", type=Path)
    verify = sub.add_parser(
        "verify", help="check a model version: card, graph, sha256, dynamic axes"
    )
    verify.add_argument("path", type=Path, help="models/NAME/VERSION")
    verify.add_argument("--module", help="FILE.py:NAME: also recheck parity against torch")
    verify.add_argument("--checkpoint", type=Path, help="the state_dict the model came from")
    verify.add_argument("--init-kwargs", help="JSON object of NAME's arguments")
    verify.add_argument("--lengths-arg", help="forward's lengths parameter (as for export)")
    verify.add_argument(
        "--seq-first", action="store_true", help="forward takes [seq, batch, ...] (as for export)"
    )
    for name, package in HANDED_OVER.items():
        sub.add_parser(name, help=f"runs `python -m {package} {name if name != 'bench' else ''}`")
    return parser


class SignalledServer(uvicorn.Server):
    """uvicorn's server, remembering the signal that stopped it.

    uvicorn re-raises that signal after a graceful shutdown so that the process dies of it, but
    PID 1 of a container ignores signals it has no handler for: the re-raise does nothing and
    `docker stop` would see exit status 0. `exit_status` gives the shell's 128 + signal instead.
    """

    stop_signal: int | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Record the first signal, then shut down as uvicorn does."""
        if self.stop_signal is None:
            self.stop_signal = sig
        super().handle_exit(sig, frame)

    def exit_status(self) -> int:
        """0 after a normal return, 128 + the signal number after a signalled shutdown."""
        return 0 if self.stop_signal is None else 128 + self.stop_signal


def settings_from(args: argparse.Namespace) -> Settings:
    """Environment first, flags given on the command line override it."""
    overrides: dict[str, Any] = {
        key: value for key, value in vars(args).items() if key != "command" and value is not None
    }
    return Settings(**overrides)


def serve(args: argparse.Namespace) -> int:
    """Run uvicorn on the app; a strict start loads the repository first and fails in one line.

    Stopped by a signal, the exit status is 128 + its number (143 for SIGTERM) even as PID 1.
    """
    from service.app import create_app
    from service.core.providers import provider_config
    from service.core.repository import Repository, require_repository
    from service.core.runtime import silence_onnxruntime_logger
    from service.edges.connections import guarded_http_protocol
    from service.edges.ws_guard import protocol_max_size
    from service.logs import configure_logging

    settings = settings_from(args)
    require_repository(settings.repository)
    configure_logging(settings.log_level, settings.log_format)
    if settings.log_format is LogFormat.JSON:
        # every line must parse as JSON; `--log-format text` keeps onnxruntime's own lines
        silence_onnxruntime_logger()
    log.info("effective settings", extra={"settings": settings.masked()})
    repository = None
    if settings.strict or settings.require_provider:
        # a required provider that is missing stops the start here, in one line, exit 1
        repository = Repository.load(
            settings.repository,
            providers=settings.providers,
            intra_op_threads=settings.intra_op_threads,
            strict=settings.strict,
            config=provider_config(settings),
        )
    app = create_app(settings, repository=repository)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        http=guarded_http_protocol(
            idle_timeout_s=settings.idle_timeout_s,
            request_timeout_s=settings.request_timeout_s,
            metrics=app.state.engine.metrics,
        ),
        timeout_keep_alive=max(1, math.ceil(settings.idle_timeout_s)),
        ws_max_size=protocol_max_size(settings),
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
        server_header=False,
    )
    prepare_process()
    server = SignalledServer(config)
    server.run()
    return server.exit_status()


def prepare_process() -> None:
    """Process-wide settings for a long-running server: the open-files limit raised to its
    hard maximum (one descriptor per connection: 10,000 WebSocket streams need more than the
    usual soft 1,024), everything loaded so far frozen out of the garbage collector's scans,
    and fewer young collections (GC_THRESHOLDS)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            log.warning("could not raise the open-files limit from %d", soft)
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def list_models(args: argparse.Namespace) -> int:
    """Print one line per model version."""
    from service.core.providers import provider_config
    from service.core.repository import Repository

    settings = settings_from(args)
    repository = Repository.load(
        settings.repository,
        providers=settings.providers,
        intra_op_threads=1,
        config=provider_config(settings),
    )
    for e in repository.entries():
        card = e.card
        kind = "+".join(layer.kind.value for layer in card.layers) if card else "-"
        provider = e.runner.provider if e.runner else "-"
        reason = f"  ({e.reason})" if e.reason else ""
        print(f"{e.name:24} v{e.version:<4} {e.status.value:12} {kind:16} {provider}{reason}")
    return 0


def verify(args: argparse.Namespace) -> int:
    """Check one version directory the way the server loads it; parity needs torch (export)."""
    from service.core.version import load_version

    if (args.module is None) != (args.checkpoint is None):
        print("error: --module and --checkpoint go together", file=sys.stderr)
        return 2
    model = load_version(args.path, providers=["CPUExecutionProvider"], intra_op_threads=1)
    card = model.card
    print(
        orjson.dumps(
            {
                "ok": True,
                "model": model.name,
                "version": model.version,
                "sha256": card.onnx_sha256,
                "parity": card.parity.model_dump() if card.parity else None,
            },
            option=orjson.OPT_INDENT_2,
        ).decode()
    )
    if args.module is not None:
        extra = ["--init-kwargs", args.init_kwargs] if args.init_kwargs else []
        if args.lengths_arg:
            extra += ["--lengths-arg", args.lengths_arg]
        if args.seq_first:
            extra.append("--seq-first")
        sys.stdout.flush()
        parity = [
            "parity",
            str(args.path),
            "--module",
            args.module,
            "--checkpoint",
            str(args.checkpoint),
        ]
        os.execv(sys.executable, [sys.executable, "-m", "export", *parity, *extra])
    return 0


def hand_over(command: str, argv: list[str]) -> None:
    """Replace this process with `python -m <package> ...` so torch never loads in the service."""
    package = HANDED_OVER[command]
    rest = argv if command == "bench" else [command, *argv]
    os.execv(sys.executable, [sys.executable, "-m", package, *rest])


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `rnnserve` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in HANDED_OVER:
        hand_over(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    commands = {"serve": serve, "models": list_models, "verify": verify}
    try:
        return commands[args.command](args)
    except RepositoryError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        print(
            f"error: invalid setting {field} (RNNSERVE_{field.upper()}): {message}", file=sys.stderr
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
