"""The ``ember`` command line: run, validate and describe job specs.

``ember run SPEC.json --out DIR`` runs a job locally with a progress bar and
writes the result layout into DIR; running it again after an interruption
(Ctrl-C saves a checkpoint) resumes the job. ``ember validate SPEC.json``
prints the size, memory and time estimate of a spec, or its errors with
their JSON paths. ``ember schema`` prints the JSON Schema of job specs.

The service adds ``serve``, ``worker``, ``db`` and ``token`` when the
``service`` package is installed.

Exit status: 0 on success, 1 for an invalid spec or a failed job, 2 for a
usage error, 130 for a job interrupted by Ctrl-C (resumable).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _format_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{count} B"  # pragma: no cover - the loop always returns


def _format_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _print_issues(error, stream: TextIO) -> None:
    print(f"error: the spec is invalid ({len(error.issues)} problem(s)):", file=stream)
    for issue in error.issues:
        print(f"  {issue}", file=stream)


def _load(path: str, stream: TextIO):
    """Load and validate a spec; print the problems and return ``None`` when it is invalid."""
    from ember.spec import SpecError, load_spec

    try:
        return load_spec(path)
    except SpecError as error:
        _print_issues(error, stream)
    except OSError as error:
        print(f"error: cannot read spec {path!r}: {error.strerror or error}", file=stream)
    return None


# ---------------------------------------------------------------- commands


def command_validate(args: argparse.Namespace) -> int:
    """Validate a spec and print its estimate (or, with --json, a JSON report)."""
    from ember.spec import SpecError, load_spec

    try:
        spec = load_spec(args.spec)
    except SpecError as error:
        if args.json:
            print(json.dumps({"valid": False, "errors": [issue.as_dict() for issue in error.issues]}, indent=2))
        else:
            _print_issues(error, sys.stderr)
        return EXIT_FAILED
    except OSError as error:
        print(f"error: cannot read spec {args.spec!r}: {error.strerror or error}", file=sys.stderr)
        return EXIT_FAILED

    estimate = spec.estimate()
    if args.json:
        print(json.dumps({"valid": True, "estimate": estimate.model_dump()}, indent=2))
        return EXIT_OK
    print(f"{args.spec}: valid {spec.kind} job")
    print(f"  neurons:  {estimate.neurons:,}")
    print(f"  synapses: {estimate.synapses:,}")
    print(f"  samples:  {estimate.samples:,}")
    print(f"  steps:    {estimate.steps:,} (dt = {spec.dt} ms)")
    parts = ", ".join(f"{name} {_format_bytes(size)}" for name, size in estimate.memory.items() if size)
    print(f"  memory:   {_format_bytes(estimate.bytes)} (estimate: {parts})")
    print(f"  time:     {_format_seconds(estimate.seconds)} (rough estimate on {spec.device})")
    return EXIT_OK


def command_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of job specs."""
    from ember.spec import job_schema

    print(json.dumps(job_schema(), indent=None if args.compact else 2))
    return EXIT_OK


class _Interrupt:
    """Turns the first Ctrl-C into a cancellation request; a second one stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> _Interrupt:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ninterrupt: saving a checkpoint after the current batch (Ctrl-C again to stop at once)", file=sys.stderr)

    def __call__(self) -> bool:
        return self.requested


def command_run(args: argparse.Namespace) -> int:
    """Run a spec locally and write the results to --out."""
    spec = _load(args.spec, sys.stderr)
    if spec is None:
        return EXIT_FAILED
    if args.device is not None:
        spec = spec.model_copy(update={"device": args.device})
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)

    from tqdm import tqdm

    from ember.builder import BuildError
    from ember.results import DirectoryStore
    from ember.runner import CheckpointMismatch, JobCancelled, Progress, run_job

    try:
        store = DirectoryStore(Path(args.out))
    except (OSError, ValueError) as error:
        print(f"error: cannot use output directory {args.out!r}: {error}", file=sys.stderr)
        return EXIT_FAILED
    if args.fresh:
        store.discard_checkpoint()
    store.put_artifact("spec.json", spec.model_dump_json(indent=2).encode())

    bar = None

    def report(update: Progress) -> None:
        nonlocal bar
        if args.quiet:
            return
        if bar is None:
            bar = tqdm(total=update.total, unit=update.unit[:-1], dynamic_ncols=True, smoothing=0.1)
        # The bar counts the samples of the whole job, so the label names the phase within it.
        label = update.phase if update.epoch is None else f"{update.phase} epoch {update.epoch + 1}/{spec.epochs}"
        bar.set_description(f"job: {label}", refresh=False)
        bar.update(update.done - bar.n)

    with _Interrupt() as interrupt:
        try:
            metrics = run_job(spec, store, progress=report, should_cancel=interrupt)
        except JobCancelled as cancelled:
            if bar is not None:
                bar.close()
            print(
                f"cancelled after {cancelled.done} of {cancelled.total}; checkpoint saved in {args.out}. "
                "Run the same command again to resume.",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        except (CheckpointMismatch, BuildError) as error:
            if bar is not None:
                bar.close()
            print(f"error: {error}", file=sys.stderr)
            return EXIT_FAILED
    if bar is not None:
        bar.close()
    summary = {key: metrics[key] for key in ("accuracy", "hit_rate", "false_alarm_rate", "distinct_preferred_directions") if key in metrics}
    print(f"done: results in {args.out}" + (f" {json.dumps(summary)}" if summary else ""))
    return EXIT_OK


# ------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``ember`` command, with service commands when available."""
    parser = argparse.ArgumentParser(prog="ember", description="Ember: spiking neural network jobs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = subparsers.add_parser("run", help="run a job spec locally and write its results")
    run.add_argument("spec", help="the job spec, a JSON file")
    run.add_argument("--out", required=True, help="the result directory (created if missing)")
    run.add_argument("--device", choices=["cpu", "cuda", "auto"], help="override the spec's device")
    run.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    run.add_argument("--fresh", action="store_true", help="discard a checkpoint in --out and start again")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    run.set_defaults(handler=command_run)

    validate = subparsers.add_parser("validate", help="check a job spec and print its size, memory and time estimate")
    validate.add_argument("spec", help="the job spec, a JSON file")
    validate.add_argument("--json", action="store_true", help="print a JSON report")
    validate.set_defaults(handler=command_validate)

    schema = subparsers.add_parser("schema", help="print the JSON Schema of job specs")
    schema.add_argument("--compact", action="store_true", help="print on one line")
    schema.set_defaults(handler=command_schema)

    try:
        from service.cli import add_subcommands
    except ImportError:
        add_subcommands = None
    if add_subcommands is not None:
        add_subcommands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ember`` command with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if getattr(args, "threads", None) is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    return int(args.handler(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
