"""python -m harness.tools.faults list | probe [FAULT...] | mutate [options] [-- PYTEST ARGS] | guard [--all] FILE... [-- PYTEST ARGS]"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.core import paths


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    return (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])


def main(argv: list[str] | None = None) -> int:
    own, rest = _split(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m harness.tools.faults", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the faults: id, stage, torch file, regression")
    p = sub.add_parser("probe", help="run each fault's probe with and without it (all faults by default)")
    p.add_argument("faults", nargs="*")
    m = sub.add_parser("mutate", help="run a pytest selection (after --; default make test's) against every fault")
    m.add_argument("--faults", default="", help="fault ids (space or comma separated; default: all)")
    m.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    m.add_argument("--workers", type=int, default=0, help="xdist workers per run (default 0: no xdist)")
    m.add_argument("--out", default=str(paths.RUNS_DIR / "mutate"))
    m.add_argument("--timeout-factor", type=float, default=4.0, help="a run's limit, times the baseline's time")
    m.add_argument("--rerun", default="", help="run these again although finished (ids, or all)")
    m.add_argument("--keep-stale", action="store_true",
                   help="reuse finished runs made with other code (they are marked stale; bench/ is not written)")
    m.add_argument("--expect-kills", default=None,
                   help="a kill matrix (JSON): exit 1 unless every fault it kills is killed here too")
    g = sub.add_parser("guard", help="run the cells that kill the faults living in these torch files")
    g.add_argument("files", nargs="+")
    g.add_argument("--all", action="store_true", help="every killing cell, not a small covering set")
    args = parser.parse_args(own)

    from harness.tools.faults import faults, mutate

    if args.command == "list":
        for f in faults().values():
            print(f"{f.id:44} {f.stage:11} {f.file}\n{'':44} {f.doc}")
        return 0
    if args.command == "probe":
        from harness.tools.faults import probes

        bad = 0
        for fid, f in faults().items():
            if args.faults and fid not in args.faults:
                continue
            probe = probes.PROBES[f.probe]
            probe()
            with probes.fault_applied(f):
                try:
                    probe()
                    verdict, bad = "NOT SHOWN: the probe passes with the fault", bad + 1
                except Exception as e:  # noqa: BLE001 - any failure of the probe shows the fault
                    verdict = f"shown: {type(e).__name__}: {str(e).splitlines()[0][:150]}"
            print(f"{fid}: {verdict}")
        return 1 if bad else 0
    if args.command == "mutate":
        selection = rest or list(mutate.DEFAULT_SELECTION)
        ids = [x for x in args.faults.replace(",", " ").split() if x]
        doc = mutate.Mutate(selection, ids or None, jobs=args.jobs, workers=args.workers, out=Path(args.out),
                            timeout_factor=args.timeout_factor, rerun=args.rerun.replace(",", " ").split(),
                            keep_stale=args.keep_stale).run()
        if args.expect_kills:
            import json

            reference = json.loads(Path(args.expect_kills).read_text())
            here = {f["id"]: f["status"] for f in doc["faults"]}
            missed = [f["id"] for f in reference["faults"] if f["status"] == "killed" and here.get(f["id"]) != "killed"]
            if missed:
                print(f"expected every fault {args.expect_kills} kills to be killed by this selection; "
                      f"not killed: {missed}")
                return 1
            print(f"every fault {args.expect_kills} kills is killed by this selection")
        return 0 if all(f["status"] != "not run" for f in doc["faults"]) else 1
    if args.command == "guard":
        chosen, cells = mutate.guard_cells(args.files, everything=args.all)
        print(f"guard: {len(chosen)} faults live in {' '.join(args.files)}:")
        for f in chosen:
            print(f"  {f['id']} ({f['status']}, {len(f['killed_by'])} killing cells): {f['doc']}")
        if not cells:
            print("guard: no cell of the committed matrix kills them")
            return 1
        print(f"guard: running {len(cells)} cells")
        with tempfile.TemporaryDirectory(prefix="ac-guard-") as tmp:
            argsfile = Path(tmp) / "cells.txt"
            argsfile.write_text("".join(c + "\n" for c in cells))
            return subprocess.call([sys.executable, "-m", "pytest", f"@{argsfile}", *rest], cwd=paths.ROOT)
    return 2


if __name__ == "__main__":
    sys.exit(main())
