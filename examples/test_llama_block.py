"""The Llama-style example under AC, through the ac_conformance fixture only (the plugin is installed with
ac-conformance; run `pytest examples/test_llama_block.py`; `--snapshot-update` writes the goldens)."""

from llama_block import build


def test_selective_op(ac_conformance):
    report = ac_conformance.check(build, policy="selective-op", backends=("aot_eager",), goldens="goldens")
    assert all(r.figures["activation_bytes"] is not None for r in report.results)


def test_every_other_mm(ac_conformance):
    ac_conformance.check(build, policy="every_other_mm")
