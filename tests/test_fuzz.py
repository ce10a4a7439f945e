"""The fuzzer finds a planted fault within its smoke budget and shrinks it to a program of a few ops."""

import torch
import torch.fx as fx

from harness.core import pipeline
from harness.tools.fuzz import runner
from harness.core.case import Checkpoint, Partitioner
from harness.rows.fuzz.program import Prog, Region, Step
from harness.rows.fuzz.strategies import programs


def _perturb_one_recomputed_node(real_partition):
    """A test-only partitioner: the first forward op the backward graph recomputes is scaled by 1.5."""
    def partition(joint: fx.GraphModule, joint_inputs, **kwargs):
        forward = {n.name for n in joint.graph.nodes if n.op == "call_function" and "is_forward" in str(n.meta.get("partitioner_tag", ""))}
        fw, bw = real_partition(joint, joint_inputs, **kwargs)
        for node in bw.graph.nodes:
            val = node.meta.get("val")
            if node.op == "call_function" and node.name in forward and isinstance(val, torch.Tensor) and val.is_floating_point():
                with bw.graph.inserting_after(node):
                    bad = bw.graph.call_function(torch.ops.aten.mul.Tensor, (node, 1.5))
                node.replace_all_uses_with(bad, delete_user_cb=lambda u: u is not bad)
                bw.recompile()
                break
        return fw, bw
    return partition


def test_planted_fault_is_found_and_shrunk(monkeypatch):
    real = pipeline.partition_fn
    monkeypatch.setattr(pipeline, "partition_fn", lambda name: _perturb_one_recomputed_node(real(name)))
    stats, findings = runner.fuzz(max_examples=30, derandomize=True, known={}, write=False, database=False,
                                  strategy=programs(inductor_one_in=0, allow_random=False, autocast_one_in=0,
                                                    partitioners=(Partitioner.MIN_CUT,)), verbose=False, cheap=True)
    numerics = {sig: prog for sig, (prog, _) in findings.items() if sig.startswith("numerics:compiled")}
    assert numerics, (f"expected the planted fault (a recomputed node scaled by 1.5) to be found as a compiled numerics "
                      f"finding in 30 derandomized examples, saw findings {sorted(findings)} after {stats.tried} programs")
    sizes = {sig: len(p.steps) for sig, p in numerics.items()}
    assert all(n <= 3 for n in sizes.values()), f"expected the finding shrunk to at most 3 ops, saw {sizes}: " + \
        "; ".join(p.describe() for p in numerics.values())


def test_finding_script_reproduces_standalone(tmp_path, monkeypatch):
    """A finding renders as a standalone script that exits 1 while the problem reproduces and 0 otherwise."""
    import subprocess
    import sys

    from harness.rows.fuzz import repro

    prog = Prog(n=2, d=4, input_grads=[True], steps=[Step("sin", [0]), Step("mm", [1])], regions=[Region(0, 2)])
    path = tmp_path / "finding.py"
    path.write_text(repro.render(prog, "numerics:demo", "demo message", "finding.py"))
    ok = subprocess.run([sys.executable, str(path)], capture_output=True, text=True)
    assert ok.returncode == 0 and "OK:" in ok.stdout, f"expected a healthy program's repro to exit 0 with OK, saw rc={ok.returncode}:\n{ok.stdout}\n{ok.stderr[-2000:]}"
    assert repro.read_spec(path) == (prog, "numerics:demo"), "expected the SPEC line to round-trip the program and signature"


def test_every_vocabulary_op_names_a_real_aten_overload():
    """Policies are rendered as torch.ops.aten.<name>: a wrong overload name crashed a 30-minute campaign."""
    import torch

    from harness.rows.fuzz.program import VOCAB

    bad = []
    for name, spec in VOCAB.items():
        for op in spec.aten:
            packet, overload = op.rsplit(".", 1)
            if not hasattr(getattr(torch.ops.aten, packet, None) or object(), overload):
                bad.append(f"{name}: aten.{op}")
    assert bad == [], f"expected every vocabulary op to resolve to an aten overload, saw unresolved: {bad}"


def test_worker_processes_split_the_chunks_and_their_statistics_merge(monkeypatch):
    """``campaign(workers=2)``: each spawned worker runs its own chunks (chunk k seeded by (seed, k), worker i takes
    k = i, i + 2, ...), and the merged statistics count every program either worker tried."""
    seeds = []
    real_given = runner.given

    def recording_given(strategy):
        wrap = real_given(strategy)

        def inner(body):
            test = wrap(body)
            seeds.append(test)
            return test
        return inner

    monkeypatch.setattr(runner, "given", recording_given)
    runner.fuzz(seconds=0.01, seed=3, worker=1, workers=2, known={}, write=False, database=False, verbose=False,
                cheap=True, chunk=1, strategy=programs(inductor_one_in=0, autocast_one_in=0))
    assert [t._hypothesis_internal_use_seed for t in seeds[:1]] == [3 * 100_003 + 1], (
        f"expected worker 1 of 2 to start at chunk 1; saw seeds {[t._hypothesis_internal_use_seed for t in seeds]}")

    stats, findings = runner.campaign(seconds=1, seed=3, workers=2, strategy_kwargs={"inductor_one_in": 0},
                                      known=None, write=False, database=False, verbose=False, cheap=True, chunk=2)
    assert stats.tried >= 4 and sum(stats.judged.values()) >= 4, (
        f"expected both workers' programs counted (each runs at least one chunk of 2); saw {stats.tried} tried, "
        f"judged {dict(stats.judged)}")
    assert findings == {}, f"expected no new findings (known ones are on file) in two small chunks; saw {sorted(findings)}"


def test_stats_merge_adds_every_field():
    a, b = runner.Stats(tried=2, passed=1), runner.Stats(tried=3, invalid=1)
    a.op_mixes.add(("sin",))
    b.op_mixes.add(("mm",))
    a.judged["aot_eager"] += 2
    b.judged["aot_eager"] += 3
    a.merge(b)
    seen = (a.tried, a.passed, a.invalid, a.op_mixes, a.judged["aot_eager"])
    assert seen == (5, 1, 1, {("sin",), ("mm",)}, 5), f"expected sums, a union and added counters; saw {seen}"


def test_programs_differing_only_in_regions_share_one_no_ac_baseline(monkeypatch):
    """Case.no_ac_key: without AC the regions pass through, so two programs with the same steps are one program; the
    fuzzer compiles its no-AC baseline once, and the figures the invariants read -- backward FLOPs, activation bytes,
    the saved activations by name -- equal those of a compile of each.  (Graph inputs may be numbered in another
    order: Dynamo numbers them as the source first touches them, and the regions move that.)"""
    import dataclasses

    from harness.core import analysis, baselines
    from harness.core.case import Axes
    from harness.rows.fuzz import oracles

    a = Prog(n=2, d=4, input_grads=[True], steps=[Step("sin", [0]), Step("mm", [1]), Step("cos", [2])],
             regions=[Region(0, 2)])
    b = dataclasses.replace(a, regions=[Region(1, 3, Checkpoint.REENTRANT)],
                            policy={"mm.default": torch.utils.checkpoint.CheckpointPolicy.MUST_SAVE})
    c = dataclasses.replace(a, steps=[Step("sin", [0]), Step("mm", [1]), Step("sin", [2])])
    compiles = []
    real = baselines.baseline

    def counted(case, axes, ac):
        compiles.append(case.name)
        return real(case, axes, ac)

    monkeypatch.setattr(baselines, "baseline", counted)
    monkeypatch.setattr(baselines, "_SHARED_NO_AC", {})
    axes = Axes("min_cut", "aot_eager", "cpu", "float32")
    def read(f):
        return f.bw_flops, f.activation_bytes, sorted((s.name, s.bytes) for s in f.saved if "activation" in s.kind)

    shared = [read(baselines.figures(oracles.case_for(p), axes, False)) for p in (a, b, c)]
    alone = [read(analysis.of(pipeline.compile_and_record(oracles.case_for(p), axes, ac=False))) for p in (a, b, c)]
    assert len(compiles) == 2, f"expected one no-AC compile for a and b, one for c (other steps); saw {compiles}"
    assert shared == alone, f"expected the shared figures to equal each program's own no-AC compile; saw {shared} vs {alone}"


def test_a_crash_saving_a_non_tensor_is_one_finding_whatever_the_mix():
    """signature_key: the types a program happens to save (and where the 140-character signature cuts the list) do not
    make a new finding, which would be shrunk and written again; another message does."""
    from harness.rows.fuzz.oracles import signature_key

    head = "crash:compile:AssertionError:expected all tensors_saved_with_vc_check to be Tensors, got types: "
    same = [head + "[<class 'torch.Tensor'>, <class 'tuple'>, <class 'torch.Tensor'>]",
            head + "[<class 'torch.nn.parameter.Parameter'>, <class 'torch.nn.parameter.Param"]  # cut at 140 characters
    other = "crash:compile:AssertionError:some other assertion [<class 'torch.Tensor'>]"
    keys = {signature_key(s) for s in same}
    assert len(keys) == 1 and signature_key(other) not in keys, (
        f"expected one key for both mixes and another for another message; saw {keys} and {signature_key(other)}")


def test_committed_findings_load_as_the_programs_they_were_found_as():
    """The SPEC line of every committed finding script reads back as a frozen program whose JSON (and so its digest,
    the script's name) is the line itself: a change to the program's types must not change what a finding means."""
    import ast
    import re

    from harness.core.paths import FINDINGS
    from harness.rows.fuzz import repro

    scripts = sorted((FINDINGS / "fuzz").glob("*.py"))
    assert scripts, "expected committed fuzz findings under findings/fuzz/"
    for path in scripts:
        prog, _ = repro.read_spec(path)
        spec = ast.literal_eval(re.search(r"^SPEC = (.*?)  # the program", path.read_text(), re.M).group(1))
        assert (prog.to_json(), prog.digest()) == (spec, path.stem), (
            f"{path.name}: expected the program to serialise back to its SPEC line and digest {path.stem}; saw "
            f"digest {prog.digest()}")
        try:
            hash(prog)
        except TypeError as e:
            raise AssertionError(f"{path.name}: expected a frozen, hashable program value; saw {e}") from e
