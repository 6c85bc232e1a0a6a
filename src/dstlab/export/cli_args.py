"""`dstlab export RUN_DIR --format F --out FILE`: the export room's sub-command."""

from __future__ import annotations

import argparse

from dstlab.export.format_names import FORMATS


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export",
        help="write a run's final model as one file: dense, csr, condensed or semi_structured",
        description="Write the final model of a run directory (its last checkpoint) as one file "
        "that torch.load(FILE, weights_only=True) reads; load it with dstlab.export.load(FILE), "
        "or without dstlab through dstlab/export/modules.py (see the README).",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the --out of a dstlab train run")
    parser.add_argument(
        "--format",
        default="dense",
        metavar="FORMAT",
        help=f"{', '.join(FORMATS)}. dense: state_dict with exact zeros (default); csr: torch.sparse_csr weights; "
        "condensed: (out, k) values and indices, one fan-in per layer; semi_structured: 2:4 "
        "weights for a CUDA GPU of compute capability 8.0+",
    )
    parser.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    parser.add_argument(
        "--pad",
        action="store_true",
        help="condensed: fill rows of unequal fan-in up to the largest with zero weights",
    )
    parser.add_argument(
        "--dense-layers",
        default="",
        metavar="NAMES",
        help="comma-separated weight names or patterns kept dense (e.g. 'conv*.weight')",
    )
    parser.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from dstlab.export.run_dir import export_run

    dense = [name.strip() for name in args.dense_layers.split(",") if name.strip()]
    written = export_run(args.run_dir, args.format, args.out, pad=args.pad, dense_layers=dense)
    for name, layer in written["layers"].items():
        print(f"{name}: density {layer['density']:.4g}, stored {layer['stored']}")
    print(f"wrote {written['out']} ({written['format']}, {written['bytes'] / 1e6:.3g} MB)")
    return 0
