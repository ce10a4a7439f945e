"""python -m harness.tools.fuzz run [--seconds S] [--seed N] [--workers W] | promote findings/fuzz/<hash>.py [--reason TEXT]"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

from harness.tools.fuzz import runner


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.tools.fuzz")
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="fuzz for a time budget, print statistics and findings")
    run.add_argument("--seconds", type=float, default=180)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--inductor-one-in", type=int, default=30, help="one program in N uses inductor (0: never)")
    run.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                     help="worker processes (default: one per CPU); they split the seed's chunks of programs")
    run.add_argument("--no-database", action="store_true",
                     help="start from no saved examples (.cache/hypothesis): the seed alone decides the programs")
    run.add_argument("--no-write", action="store_true", help="report findings without writing findings/fuzz/*.py")
    run.add_argument("--stats-json", default=None, help="also write the statistics as JSON here (make bench reads it)")
    pro = sub.add_parser("promote", help="turn a finding script into a case + known-failure entry")
    pro.add_argument("path")
    pro.add_argument("--reason", default=None)
    args = ap.parse_args(argv)
    if args.cmd == "promote":
        print(runner.promote(args.path, args.reason))
        return 0
    start = time.monotonic()
    stats, findings = runner.campaign(seconds=args.seconds, seed=args.seed, workers=args.workers,
                                      strategy_kwargs={"inductor_one_in": args.inductor_one_in},
                                      database=not args.no_database, write=not args.no_write)
    seconds = time.monotonic() - start
    print(stats.report(findings, seconds, args.workers))
    if args.stats_json:
        Path(args.stats_json).write_text(json.dumps(stats.figures(seconds, args.workers, findings), indent=1) + "\n")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
