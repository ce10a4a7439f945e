"""python -m harness.fuzz run [--seconds S] [--seed N] [--workers W] | promote findings/fuzz/<hash>.py [--reason TEXT]"""

import argparse
import os
import sys
import time

from harness.fuzz import runner


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.fuzz")
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="fuzz for a time budget, print statistics and findings")
    run.add_argument("--seconds", type=float, default=180)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--inductor-one-in", type=int, default=30, help="one program in N uses inductor (0: never)")
    run.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                     help="worker processes (default: one per CPU); they split the seed's chunks of programs")
    pro = sub.add_parser("promote", help="turn a finding script into a case + known-failure entry")
    pro.add_argument("path")
    pro.add_argument("--reason", default=None)
    args = ap.parse_args(argv)
    if args.cmd == "promote":
        print(runner.promote(args.path, args.reason))
        return 0
    start = time.monotonic()
    stats, findings = runner.campaign(seconds=args.seconds, seed=args.seed, workers=args.workers,
                                      strategy_kwargs={"inductor_one_in": args.inductor_one_in})
    print(stats.report(findings, time.monotonic() - start, args.workers))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
