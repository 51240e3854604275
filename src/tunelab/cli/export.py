"""`tunelab export`: a finished run compressed for CPU inference (int8 ONNX Runtime, pruning)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import CliError, add_command, find_run, info, runs_dir_of, runs_dir_option


def cmd_export(args: argparse.Namespace) -> int:
    from tunelab.export import ExportOptions, parse_prune

    options = ExportOptions(
        quantize=args.quantize,
        prune=parse_prune(args.prune),
        recovery_steps=args.recovery_steps,
        validation_file=args.validation_file,
        max_eval_samples=args.max_eval_samples,
    )  # checked before the run is looked up or a model loads: a wrong option fails at once
    run = find_run(args.run, runs_dir_of(args), required=False)
    if run is None:
        raise CliError(
            f"{args.run!r} is not a run folder or a run id in {runs_dir_of(args)} "
            "(export works on a finished run; `tunelab runs list` shows them)"
        )
    from tunelab.export import export_run

    info(args, f"exporting {run.path} ({args.quantize}{', prune ' + args.prune if args.prune else ''}) ...")
    report = export_run(run.path, args.output, options, quiet=args.quiet)
    print((Path(report["export"]) / "report.md").read_text().rstrip())
    info(args, f"export folder: {report['export']} (tunelab classify/generate take it like a run)")
    return 0


def register(commands) -> None:
    export = add_command(
        commands,
        "export",
        "compress a run's model for CPU inference (int8, pruning)",
        "Export a finished run for fast CPU inference: dynamic int8 quantization of the Linear layers\n"
        "with ONNX Runtime, optionally after structured pruning (layers=N keeps the lowest N encoder\n"
        "layers, ffn=F keeps the share F of each feed-forward block) and a short recovery fine-tune with\n"
        "the run's own recipe; magnitude=F zeroes weights (saves no time: the matrices stay dense).\n"
        "Prints and writes a report (size, CPU latency at batch 1 and 32, accuracy or validation loss,\n"
        "before and after). `tunelab classify`, `tunelab generate` and the app load the export folder.",
        "  tunelab export latest --quantize int8\n"
        "  tunelab export cls-20261123 --prune layers=4,ffn=0.5 --recovery-steps 300 --output sst2-small\n"
        '  tunelab classify runs/cls-20261123/export-int8 "a wonderful film"',
    )
    export.add_argument("run", metavar="RUN", help="run id, unique prefix, run folder or `latest`")
    export.add_argument("--quantize", default="int8", help="int8, or none (export fp32, e.g. after pruning)")
    export.add_argument(
        "--prune", metavar="SPEC", default=None, help="layers=N, ffn=F and/or magnitude=F, comma-separated"
    )
    export.add_argument(
        "--recovery-steps",
        "--recovery_steps",
        type=int,
        default=200,
        metavar="N",
        help="fine-tune steps after structured pruning (0: none)",
    )
    export.add_argument(
        "--output", metavar="DIR", default=None, help="export folder (default: RUN/export-<quantize>)"
    )
    export.add_argument(
        "--validation-file",
        "--validation_file",
        metavar="F",
        default=None,
        help="data for accuracy/loss (default: the run's validation data)",
    )
    export.add_argument(
        "--max-eval-samples", "--max_eval_samples", type=int, default=None, metavar="N", help="limit it"
    )
    runs_dir_option(export)
    export.set_defaults(func=cmd_export)
