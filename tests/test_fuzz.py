"""The fuzzer finds a planted fault within its smoke budget and shrinks it to a program of a few ops."""

import pytest
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


@pytest.mark.meta_slow  # 30 programs, then hypothesis shrinks the finding compile by compile (about a minute)
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
    """signature_key: the types a program happens to save beside the offending one (and where the 140-character
    signature cuts the list) do not make a new finding, which would be shrunk and written again; another message does."""
    from harness.rows.fuzz.oracles import signature_key

    head = "crash:compile:AssertionError:expected all tensors_saved_with_vc_check to be Tensors, got types: "
    full = [head + "[<class 'torch.Tensor'>, <class 'tuple'>, <class 'torch.Tensor'>]",
            head + "[<class 'torch.nn.parameter.Parameter'>, <class 'torch.nn.parameter.Parameter'>, <class 'tuple'>]"]
    same = [(full[0], full[0]), (full[1][:140], full[1])]  # (signature cut at 140 characters, the message in full)
    other = "crash:compile:AssertionError:some other assertion [<class 'torch.Tensor'>]"
    keys = {signature_key(s, m) for s, m in same}
    assert len(keys) == 1 and signature_key(other, other) not in keys, (
        f"expected one key for both mixes and another for another message; saw {keys} and {signature_key(other, other)}")


def test_a_different_cause_with_a_similar_message_is_a_new_finding():
    """signature_key keeps the failing op/graph context: the non-tensor a crash saved, the op and policy of the node an
    invariant names, the program's partitioner, backend and budget regime.  So a DeviceMesh saved as a tensor is not
    the sort tuple on file, a MUST_SAVE sigmoid recomputed at budget 0.5 is not the MUST_SAVE mm of budget 0, and an
    inductor random-op recompute is not the aot_eager one."""
    import dataclasses

    from harness.core.case import Backend
    from harness.rows.fuzz.oracles import signature_key

    head = "crash:compile:AssertionError:expected all tensors_saved_with_vc_check to be Tensors, got types: "
    tuple_msg = head + "[<class 'torch.Tensor'>, <class 'tuple'>]"
    mesh_msg = head + "[<class 'torch.Tensor'>, <class 'torch.distributed.device_mesh.DeviceMesh'>]"
    base = Prog(n=2, d=4, input_grads=[True], steps=[Step("sin", [0]), Step("mm", [1])], regions=[Region(0, 2)])
    at = {b: dataclasses.replace(base, budget=b) for b in (0.0, 0.1, 0.5)}
    inv = "invariant:must_save_not_recomputed"
    mm_zero = (inv, "cell-budget0.0: node mm_1 (policy MUST_SAVE) is recomputed in the backward; ...", at[0.0])
    mm_zero_again = (inv, "other-cell-budget0.0: node mm (policy MUST_SAVE) is recomputed in the backward", at[0.0])
    sigmoid_half = (inv, "cell-budget0.5: node sigmoid (policy MUST_SAVE) is recomputed in the backward", at[0.5])
    mm_half = (inv, "cell-budget0.5: node mm (policy MUST_SAVE) is recomputed in the backward", at[0.5])
    rnd = "invariant:random_ops_replayed"
    random_msg = "c: forward random op bernoulli (aten.bernoulli.default, policy PREFER_RECOMPUTE) is recomputed"
    random_aot = (rnd, random_msg, at[0.0])
    random_inductor = (rnd, random_msg, dataclasses.replace(at[0.0], backend=Backend.INDUCTOR))
    key = lambda t: signature_key(*t)  # noqa: E731
    pairs = {"tuple vs DeviceMesh": (key((tuple_msg[:140], tuple_msg, at[0.1])), key((mesh_msg[:140], mesh_msg, at[0.1]))),
             "mm vs sigmoid": (key(mm_half), key(sigmoid_half)), "budget 0 vs 0.5": (key(mm_zero), key(mm_half)),
             "aot_eager vs inductor": (key(random_aot), key(random_inductor))}
    same = [k for k, (a, b) in pairs.items() if a == b]
    assert same == [], f"expected a new key for each other cause; saw one key for {same}: {pairs}"
    assert key(mm_zero) == key(mm_zero_again), (
        f"expected the same cause (MUST_SAVE mm at budget 0, another cell and node number) to keep its key; saw "
        f"{key(mm_zero)} vs {key(mm_zero_again)}")


def test_the_findings_on_file_are_known_by_their_keys():
    """The campaign's known findings are keyed as new ones are: each committed script's signature, message (its
    docstring's first lines) and program give the key a new failure of the same cause gets."""
    from harness.core.paths import FINDINGS
    from harness.rows.fuzz import oracles, repro

    known = runner.known_signatures()
    path = FINDINGS / "fuzz" / "6fc4a74d08.py"
    prog, sig = repro.read_spec(path)
    fresh = ("expected all tensors_saved_with_vc_check to be Tensors, got types: [<class 'torch.Tensor'>, "
             "<class 'tuple'>, <class 'torch.Tensor'>]")
    again = oracles.signature_key(oracles.error_signature("compile", AssertionError(fresh)), fresh, prog)
    sort_crashes = {FINDINGS / "fuzz" / f"{d}.py" for d in ("6fc4a74d08", "73d10ceecb", "9ce06a30b6", "312ec7964a")}
    assert known.get(again) in sort_crashes, (
        f"expected the sort crash's key {again!r} on file (as one of {sorted(p.name for p in sort_crashes)}); saw {known}")


def _with_and_without(tmp_path, script, plant: str) -> dict:
    """{"fault": (exit code, output), "torch": ...}: ``script`` run with a synthetic fault planted in its process
    (``plant``, a call into tests/synthetic_faults.py, made by a sitecustomize on PYTHONPATH) and without it."""
    import os
    import subprocess
    import sys

    from harness.core.paths import ROOT

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"import sys\nsys.path.insert(0, {str(ROOT / 'tests')!r})\n"
                                           f"import pytest, synthetic_faults\n{plant}\n")
    seen = {}
    for name, env in (("fault", {"PYTHONPATH": str(site)}), ("torch", {})):
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                              env={**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, **env})
        seen[name] = (proc.returncode, proc.stdout.strip() or proc.stderr[-500:])
    return seen


@pytest.mark.meta_slow  # two script processes, each compiling the program (~13 s)
def test_an_invariant_finding_renders_a_script_that_checks_the_invariant(tmp_path):
    """An invariant failure's script checks that invariant with torch alone: it exits 1 while the partitioner saves a
    PREFER_RECOMPUTE intermediate (a synthetic fault planted in the script's process by a sitecustomize), 0 without
    the fault.  The old scripts checked the numerics and two policy rules only, so most invariant findings (e.g.
    6a14feb248) could not be written as repros."""
    from harness.rows.fuzz import repro

    prog = Prog(n=2, d=4, input_grads=[True], steps=[Step("sin", [0]), Step("mm", [1]), Step("cos", [2])],
                regions=[Region(0, 3)])
    path = tmp_path / "finding.py"
    path.write_text(repro.render(prog, "invariant:recompute_tagged_not_saved", "demo message", "finding.py"))
    seen = _with_and_without(tmp_path, path, "synthetic_faults.recompute_tag_ignored(pytest.MonkeyPatch())")
    assert seen["fault"][0] == 1 and "invariant recompute_tagged_not_saved: node sin (policy PREFER_RECOMPUTE)" in \
        seen["fault"][1] and seen["torch"][0] == 0, f"expected exit 1 with the fault naming the node, 0 without; saw {seen}"


@pytest.mark.meta_slow  # two script processes, each compiling the program at the ten budgets of the sweep
def test_a_knapsack_sweep_finding_renders_a_script_that_checks_it(tmp_path):
    """Issue 28 item 4: budget_knapsack_monotone, the sweep's rule on the knapsack, has its torch-alone form in the
    scripts (standalone.budget_knapsack_monotone, the knapsacks spied at each budget of SWEEP_POINTS): the script of
    an uncheckpointed 4-matmul program exits 1 under a solver planted to keep nothing above capacity 0.4
    (tests/synthetic_faults.py, loaded by a sitecustomize), naming the budgets, and 0 on torch's own solver."""
    from harness.rows.fuzz import repro

    steps = [Step("mm", [0], w=0), Step("gelu", [1]), Step("mm", [2], w=1), Step("gelu", [3]), Step("mm", [4], w=2),
             Step("gelu", [5]), Step("mm", [6], w=3)]
    prog = Prog(n=64, d=64, input_grads=[True], n_weights=4, steps=steps, regions=[], budget=1.0)
    path = tmp_path / "finding.py"
    path.write_text(repro.render(prog, "invariant:budget_knapsack_monotone", "demo message", "finding.py"))
    seen = _with_and_without(tmp_path, path, "synthetic_faults.knapsack_slower_above(pytest.MonkeyPatch(), 0.4)")
    assert seen["fault"][0] == 1 and "invariant budget_knapsack_monotone: dp's objective falls" in seen["fault"][1] \
        and "at budget 0.5" in seen["fault"][1] and seen["torch"][0] == 0, \
        f"expected exit 1 with the fault naming the budgets, 0 without; saw {seen}"


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


def test_a_promoted_finding_pins_the_message_of_its_defect():
    """promote writes a known-failure entry whose message names the defect (node names and numbers generalised), never
    one that matches any message of the check."""
    import re

    cases = [("invariant:must_save_not_recomputed",
              "fuzz_ddb601ab93-min_cut-aot_eager-cpu-float32-budget0.0: node mm (policy MUST_SAVE) is recomputed in the "
              "backward; expected a MUST_SAVE node to be saved", "AssertionError: other: node addmm_2 (policy MUST_SAVE) "
              "is recomputed in the backward; expected"),
             ("crash:compile:AssertionError:expected all tensors_saved_with_vc_check to be Tensors, got types: [<class", "",
              "AssertionError: expected all tensors_saved_with_vc_check to be Tensors, got types: [<class 'tuple'>]")]
    for sig, message, seen in cases:
        stage, rx = runner._stage_of(sig, message)
        assert re.search(rx, seen) and not any(re.search(rx, t) for t in ("", "x", "AssertionError: other")), (
            f"{sig}: expected /{rx}/ to match {seen!r} and no unrelated message")
