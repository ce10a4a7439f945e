"""``python -m harness.tools.fuzz``: the differential fuzzer's campaign runner and its repro writer (the programs are in harness/rows/fuzz)."""
