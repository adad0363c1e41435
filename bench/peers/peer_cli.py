"""The command line every peer script shares (kept free of torch so that launchers start fast)."""

from __future__ import annotations

import argparse


def parse(doc: str | None, parallel_flag: str = "--workers") -> argparse.Namespace:
    """`--data DIR [--rounds R] [PARALLEL_FLAG N] [--eval-threads T] [--result FILE]`;
    `parallel_flag` names the parallel units (`--workers`, Flower's `--actors`)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a `fedkit data export` directory")
    ap.add_argument("--rounds", type=int, help="rounds (default: the exported config's)")
    ap.add_argument(parallel_flag, type=int, default=2, help="parallel units, 1 torch thread each")
    ap.add_argument("--eval-threads", type=int, default=2, help="torch threads for the final evaluation")
    ap.add_argument("--result", help="write the result JSON here")
    return ap.parse_args()
