"""Area "fuzz_findings": programs the fuzzer (harness/tools/fuzz) found failing, promoted to regular cases with
`python -m harness.tools.fuzz promote findings/fuzz/<hash>.py`.  Each runs its repro's program through the standard
pipeline plus the fuzz oracles (random-op replay, SAC policy respected); each has a known-failure entry
(known_failures.toml) while torch has the defect.  A finding is promoted only after its standalone script reproduces
it (exit 1) on the torch it names (``python -m harness.tools.fuzz promote`` runs it first)."""

from __future__ import annotations

from harness.rows.fuzz import oracles, repro
from harness.core.paths import FINDINGS

PROMOTED = [
    "fc98edfb17",  # numerics-random:aot_eager:compiled vs eager replaying the compiled draws
    "6cd5cde65f",  # numerics-random:inductor:compiled vs eager replaying the compiled draws
    "322a665cbf",  # policy:MUST_SAVE recomputed (activation_memory_budget=0)
    "6fc4a74d08",  # crash:compile:AssertionError:expected all tensors_saved_with_vc_check to be Tensors, got t
    # promoted findings go above this line
]


def finding_case(digest: str):
    prog, sig = repro.read_spec(FINDINGS / "fuzz" / f"{digest}.py")
    return oracles.case_for(prog, area="fuzz_findings", name=f"fuzz_{digest}")


# An installed wheel ships no findings/ (a run of the examples from inside a checkout loads the suite plugin from it).
CASES = [finding_case(d) for d in PROMOTED] if (FINDINGS / "fuzz").is_dir() else []
