"""`dstlab report DIR` and `dstlab similarity ...`: the analysis room's sub-commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from dstlab.analysis.metrics import DEFAULT_METRIC, METRICS
from dstlab.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser(
        "report",
        help="turn a study directory into tables, figures and DIR/report/index.html",
        description="Write DIR/report/ (index.html, summary.csv, ranks.csv, similarity.csv, "
        "figures as PNG and SVG) from a study directory; prints the path of index.html.",
    )
    report.add_argument("study_dir", metavar="DIR", help="the study directory")
    report.add_argument(
        "--metric",
        choices=METRICS,
        default=DEFAULT_METRIC,
        help="accuracy to compare (default: test_acc_best_val, the test accuracy of the model "
        "with the best validation accuracy, as the study reports; test_acc: the final model)",
    )
    report.set_defaults(func=_report)

    sim = sub.add_parser(
        "similarity",
        help="mask similarity at the start: which weights each criterion would remove",
        description="Build the model and data, draw the initial sparse topology, take one "
        "batch's gradient, and print the Jaccard matrix of the weight sets each pruning "
        "criterion would remove at each fraction; writes a CSV and a heatmap.",
    )
    sim.add_argument("--model", required=True, help="model name (see `dstlab list models`)")
    sim.add_argument("--data", required=True, help="dataset name (see `dstlab list datasets`)")
    sim.add_argument("--density", type=float, default=0.2, help="density (default 0.2)")
    sim.add_argument(
        "--fractions", default="0.5,0.25,0.125,0.0625", help="comma-separated prune fractions"
    )
    sim.add_argument(
        "--criteria",
        default=None,
        help="comma-separated pruning criteria (default: all; `dstlab list criteria`)",
    )
    sim.add_argument("--seed", type=int, default=0, help="seed of model, topology and batch")
    sim.add_argument("--batch-size", type=int, default=128, help="samples in the gradient batch")
    sim.add_argument(
        "--distribution", default="erk", help="initial layer densities (erk, er, uniform)"
    )
    sim.add_argument("--data-dir", default=None, help="where datasets live")
    sim.add_argument(
        "--out", default=None, help="output folder (default: runs/similarity/MODEL-DATA-dDENSITY)"
    )
    sim.set_defaults(func=_similarity)


def _report(args: argparse.Namespace) -> int:
    study = Path(args.study_dir)
    if not study.is_dir():
        raise ConfigError(f"study directory '{study}' does not exist; give the folder of a study.")
    from dstlab.analysis.report import build_report

    print(build_report(study, metric=args.metric))
    return 0


def _floats(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--{name} must be comma-separated numbers, got {text!r}.") from None


def _similarity(args: argparse.Namespace) -> int:
    # run/ measures (it builds the model, data and engine); this room presents the result
    from dstlab.analysis import start_similarity as ss
    from dstlab.analysis.similarity import order_criteria
    from dstlab.run.config import choices
    from dstlab.run.start_similarity import start_similarity

    fractions = _floats(args.fractions, "fractions")
    criteria = [c.strip() for c in args.criteria.split(",") if c.strip()] if args.criteria else None
    # every pruning criterion by default, in the order the report's heatmaps use
    criteria = criteria or order_criteria(choices("prune"))
    result = start_similarity(
        args.model,
        args.data,
        args.density,
        fractions,
        criteria,
        seed=args.seed,
        batch_size=args.batch_size,
        distribution=args.distribution,
        data_dir=args.data_dir,
    )
    out = Path(args.out or f"runs/similarity/{args.model}-{args.data}-d{args.density:g}")
    title = f"{args.data}/{args.model}, density {args.density:g}: at the start"
    levels = ss.random_levels(result)
    for fraction, matrix in ss.matrices(result).items():
        print(f"Jaccard of removed sets, fraction {fraction:g}:")
        print(matrix.round(3).to_string())
        print(f"two random removals of the same sizes: {levels[fraction]['pooled']:.3f}")
        print()
    csv, png = ss.write(result, out, title)
    print(f"wrote {csv} and {png}")
    return 0
