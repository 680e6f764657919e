"""`python -m export export|parity|train ...`: the offline side of `rnnserve export`."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from export.api import export_module, load_user_module, recheck_parity
from export.errors import ExportError, ModuleLoadError, describe
from export.introspect import Head
from export.verify import ParityReport


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; an ExportError becomes a one-line `error: ...` and exit status 1."""
    args = _parser().parse_args(argv)
    try:
        result: int = args.run(args)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    export = commands.add_parser("export", help="export a module and checkpoint to the repository")
    _add_module_arguments(export)
    export.add_argument("--name", required=True, help="model name, e.g. digits-rnn")
    export.add_argument("--version", type=int, help="default: highest existing + 1")
    export.add_argument("--repository", type=Path, default=Path("models"))
    export.add_argument("--head", choices=[h.value for h in Head], help="default: detected")
    export.add_argument("--description", default="")
    export.add_argument("--labels", help="comma-separated output labels, one per output")
    export.add_argument("--force", action="store_true", help="replace an existing version")
    export.set_defaults(run=_export)

    parity = commands.add_parser("parity", help="recheck an existing entry against a checkpoint")
    parity.add_argument("directory", type=Path, help="models/<name>/<version>")
    _add_module_arguments(parity)
    parity.set_defaults(run=_parity)

    train = commands.add_parser("train", help="train a demo model (export.demos)")
    train.add_argument("argv", nargs=argparse.REMAINDER, help="the demo and its options")
    train.set_defaults(run=_train)
    return parser


def _add_module_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--module", required=True, help="FILE.py:NAME or package:NAME")
    parser.add_argument("--checkpoint", required=True, type=Path, help="a saved state_dict")
    parser.add_argument("--init-kwargs", default="{}", help="JSON object of NAME's arguments")
    parser.add_argument(
        "--lengths-arg",
        help="forward's lengths parameter, when its name is not lengths, lens, seq_lens, ...",
    )
    parser.add_argument(
        "--seq-first",
        action="store_true",
        default=None,
        help="forward takes [seq, batch, ...] although its recurrent layers say batch_first",
    )


def _export(args: argparse.Namespace) -> int:
    module = load_user_module(args.module, args.checkpoint, _init_kwargs(args.init_kwargs))
    labels = [label.strip() for label in args.labels.split(",")] if args.labels else None
    result = export_module(
        module,
        name=args.name,
        repository=args.repository,
        version=args.version,
        head=args.head,
        description=args.description,
        labels=labels,
        force=args.force,
        lengths_arg=args.lengths_arg,
        seq_first=args.seq_first,
    )
    print(f"wrote {result.path}")
    print(_describe_card(result.card))
    print(_describe_parity(result.parity))
    return 0


def _parity(args: argparse.Namespace) -> int:
    module = load_user_module(args.module, args.checkpoint, _init_kwargs(args.init_kwargs))
    report = recheck_parity(
        args.directory, module, lengths_arg=args.lengths_arg, seq_first=args.seq_first
    )
    print(_describe_parity(report))
    return 0


def _train(args: argparse.Namespace) -> int:
    # Imported late: the demos belong to another module and may be absent.
    try:
        demos = importlib.import_module("export.demos")
    except ImportError as exc:
        raise ExportError(f"the train subcommand needs export.demos: {describe(exc)}") from exc
    result = demos.main(list(args.argv))
    return result if isinstance(result, int) else 0


def _init_kwargs(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModuleLoadError(f"--init-kwargs is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ModuleLoadError(f"--init-kwargs must be a JSON object, got {type(value).__name__}")
    return value


def _describe_card(card: dict[str, Any]) -> str:
    states = ", ".join(f"{s['name']} [{s['rows']}, batch, {s['width']}]" for s in card["states"])
    stream = (
        "streamable" if card["streamable"] else f"not streamable ({card['not_streamable_reason']})"
    )
    padding = "padding-safe" if card["padding_safe"] else "not padding-safe"
    return f"{card['export_method']}: head {card['head']}, states {states}; {stream}; {padding}"


def _describe_parity(report: ParityReport) -> str:
    batches = ",".join(map(str, report.batch_sizes))
    seqs = ",".join(map(str, report.seq_lens))
    return (
        f"parity: max abs error {report.max_abs_error:.2e} vs torch over batch {batches} x "
        f"seq {seqs}, mixed lengths, non-zero initial state"
    )
