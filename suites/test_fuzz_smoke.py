"""Fuzz smoke run: a few dozen derandomized generated programs through the checkpoint pipeline and every fuzz oracle
(numerics vs eager without AC, random-op replay, SAC policy respected, compiles or raises a documented error).
Findings already on file under findings/fuzz/ are not failures here (they are tracked by their own cases)."""

from harness.tools.fuzz import runner
from harness.rows.fuzz.strategies import programs


def test_fuzz_smoke(record):
    stats, findings = runner.fuzz(max_examples=20, derandomize=True, write=False, database=False,
                                  strategy=programs(max_steps=5, inductor_one_in=0), verbose=False, cheap=True)
    record("fuzz_programs", stats.tried)
    assert not findings, ("expected no new fuzz findings in the derandomized smoke run, saw:\n"
                          + stats.report(findings, 0) + "\nreproduce with `make fuzz` (findings land in findings/fuzz/)")
    assert stats.passed >= 10, f"expected at least 10 of 20 smoke programs to pass every oracle, saw {stats.passed}: {stats.report({}, 0)}"
