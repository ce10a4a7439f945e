"""torchtitan-style AC policies (harness/core/policies.py) on the Llama-style and MoE blocks (harness/rows/models.py),
single process, eager and compiled (recording aot_eager backend, min-cut partitioner), fp32.

Per (model, policy): eager with the policy equals eager without AC bitwise; compiled with the policy matches eager
without AC within fp32 tolerance and equals compiled without AC bitwise; the saved activation bytes order as the
policy promises (full saves no activation; selective and budget modes save less than no AC); every invariant of
harness/core/invariants.py holds on the compiled step (against the same step compiled without AC).  The step
compiled without AC is a baseline: a process that ran it before under the same torch, harness and environment takes
it from the baseline cache (harness/core/baselines.py; property ``no_ac_from_cache``); the policy's step always runs.

MoE token counts are data-dependent (``nonzero``): by default Dynamo breaks the graph there, and a checkpoint
region containing a break is not compiled at all (it runs eagerly: 0 graphs).  With
``torch._dynamo.config.capture_dynamic_output_shape_ops=True`` the MoE model is one graph (fullgraph=True works);
the MoE cells run that way and ``test_moe_graph_breaks`` states the default behaviour.
"""

from __future__ import annotations

import functools

import pytest
import torch

from harness.core import policies as P
from harness.rows import models
from harness.rows.collect import policy_cells
from harness.tools import training as T

MOE_CONFIG = {"capture_dynamic_output_shape_ops": True}
# The shapes (compile time grows with the graph, not with the sizes: dim, heads and sequence are models.LlamaConfig's
# defaults, already small):
# * two blocks (N_LAYERS): full AC must save exactly the activation between them (block 2's input) and nothing else,
#   and selective_layer every=2 wraps one block of two;
# * test_policy keeps the default MoE (four experts, top-2): the invariants are checked node by node, and a smaller
#   MoE would check fewer of them (the conformance summary's counts must not fall);
# * test_moe_graph_breaks needs only one data-dependent `nonzero` to break the graph: two experts, top-1 routing
#   (MOE_BREAKS: each token picks one expert by a softmax over the router, so each expert's token count is
#   data-dependent and routing is not the identity), half the default's subgraphs to trace three times.
N_LAYERS = 2
MOE_BREAKS = models.LlamaConfig(n_experts=2, top_k=1)


def _policy(name):
    return P.get(name, every=2) if name == "selective_layer" else P.get(name)


def _run(model, policy, compile_mode):
    cfg = MOE_CONFIG if model == "moe" else {}
    with torch._dynamo.config.patch(**cfg):
        return T.single_process(model, policy, compile_mode=compile_mode, n_layers=N_LAYERS)


@functools.cache
def _no_ac(model, compile_mode):
    """The model's step without AC (eager, or compiled): the references of every policy of that model, the same
    whatever the policy (seeded model and inputs), so computed once per process and only read; the compiled one is a
    baseline, from the baseline cache when this torch and harness ran it before (training.no_ac_step)."""
    cfg = MOE_CONFIG if model == "moe" else {}
    return T.no_ac_step(model, compile_mode, N_LAYERS, tuple(sorted(cfg.items())))


@pytest.mark.parametrize("model,policy", [pytest.param(m, p, id=f"{m}-{p}", marks=pytest.mark.slow if slow else ())
                                          for m, p, slow in policy_cells()])
def test_policy(model, policy, record):
    pol = _policy(policy)
    ref = _no_ac(model, "none")
    eager = _run(model, pol, "none")
    problems = [f"eager {pol.id} vs eager no-AC: {m}" for m in T.mismatches(eager["grads"], ref["grads"], exact=True)]
    comp_ref = _no_ac(model, "whole")
    comp = _run(model, pol, "whole")
    problems += [f"compiled {pol.id} vs eager no-AC: {m}" for m in T.mismatches(comp["grads"], ref["grads"])]
    problems += [f"compiled {pol.id} vs compiled no-AC: {m}"
                 for m in T.mismatches(comp["grads"], comp_ref["grads"], exact=True)]
    assert comp["dynamo_graphs"] == 1, (f"expected one compiled graph for {model} under {pol.id}; "
                                        f"seen {comp['dynamo_graphs']}")
    # the comparing invariants' baseline: the same step compiled without AC (its figures; the run where it has none)
    record("no_ac_from_cache", comp_ref["cached"])
    if comp_ref["figures"] is not None:
        comp["run"].no_ac_figures = comp_ref["figures"]
    else:
        comp["run"].no_ac = comp_ref["run"]
    verdicts = T.verdicts(comp["run"])
    record("invariant_checks", verdicts["invariant_checks"])
    problems += [f"invariant {name}: {msg}" for name, msg in verdicts["invariant_failures"]]
    ac_b, no_b = comp["saved_activation_bytes"], comp_ref["saved_activation_bytes"]
    record("saved_activation_bytes", {"policy": ac_b, "no_ac": no_b})
    # full AC keeps only each block's input: block 1's is the graph input, blocks 2..n's are activations
    full_expected = (N_LAYERS - 1) * T.inputs(model).numel() * 4
    if model == "llama":  # MoE sizes are symbolic (unbacked token counts): bytes are None there
        if policy == "full":
            if ac_b != full_expected:
                problems.append(f"expected full AC to save only block 2's input ({full_expected} bytes); seen {ac_b}")
        elif not (ac_b is not None and no_b is not None and ac_b < no_b):
            problems.append(f"expected {pol.id} to save fewer activation bytes than no AC; seen {ac_b} vs {no_b}")
    elif policy == "full" and ac_b != full_expected:
        problems.append(f"expected full AC to save only block 2's input ({full_expected} bytes); seen {ac_b}")
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_every_other_mm_saves_less_than_every_mm(record):
    """torchtitan's alternate-mm rule: recomputing every other mm saves strictly fewer bytes than saving them all,
    and more than full AC."""
    sel = _run("llama", P.get("selective_op"), "whole")["saved_activation_bytes"]
    alt = _run("llama", P.get("every_other_mm"), "whole")["saved_activation_bytes"]
    record("saved_activation_bytes", {"selective_op": sel, "every_other_mm": alt})
    assert 0 < alt < sel, f"expected 0 < every_other_mm ({alt}) < selective_op ({sel}) saved activation bytes"


def test_moe_graph_breaks(record):
    """Default Dynamo config: the MoE's nonzero breaks the graph; with AC the checkpointed blocks are not compiled."""
    x = T.inputs("moe")
    m = T.build("moe", MOE_BREAKS, n_layers=1)
    torch._dynamo.reset()
    graphs, breaks, reasons = T.graph_breaks_of(m, x)
    record("moe_no_ac", {"graphs": graphs, "breaks": breaks, "reasons": sorted(set(reasons))})
    assert breaks >= 1 and any("Dynamic shape operator" in r for r in reasons), (
        f"expected a 'Dynamic shape operator' graph break (nonzero) without capture_dynamic_output_shape_ops; "
        f"seen {breaks} breaks: {reasons}")
    r = T.single_process("moe", P.get("full"), compile_mode="whole", n_layers=1, cfg=MOE_BREAKS)
    record("moe_full_ac_graphs", r["dynamo_graphs"])
    assert r["dynamo_graphs"] == 0, (f"expected the checkpointed MoE block to run uncompiled (0 graphs) when its "
                                     f"region breaks; seen {r['dynamo_graphs']} graphs")
    with torch._dynamo.config.patch(**MOE_CONFIG):
        torch._dynamo.reset()
        P.get("full").apply(m)
        torch.compile(m, backend="aot_eager", fullgraph=True)(x).sum().backward()  # raises if it breaks


def test_policy_objects():
    """Names are shortcuts for defaults; parameters override; ids are readable; wrapping selects the right blocks."""
    assert P.get("every_other_mm") == P.SelectiveOp(mm_save_every=2), f"seen {P.get('every_other_mm')}"
    assert P.get("selective_layer", every=3).id == "selective_layer3", f"seen {P.get('selective_layer', every=3).id}"
    assert P.get("memory_budget", budget=0.25).id == "memory_budget0.25", f"seen {P.get('memory_budget', budget=0.25).id}"
    wrapped = [P.get("selective_layer", every=2).wraps(i) for i in range(4)]
    assert wrapped == [False, True, False, True], f"expected blocks 2 and 4 (torchtitan) wrapped; seen {wrapped}"
    with pytest.raises(KeyError, match="unknown AC policy"):
        P.get("nope")
    for via in ("wrapper", "function", "apply_ac"):
        m = T.build("llama", n_layers=4)
        P.get("selective_layer", every=2).apply(m, via=via)
        kinds = [type(b).__name__ for b in m.layers]
        assert kinds[0] == "LlamaBlock" and kinds[1] != "LlamaBlock" and kinds[2] == "LlamaBlock", (
            f"via={via}: expected only blocks 1 and 3 (0-based) wrapped; seen {kinds}")
        names = {P.clean_name(n) for n, _ in m.named_parameters()}
        plain = {n for n, _ in T.build("llama", n_layers=4).named_parameters()}
        assert names == plain, f"via={via}: expected clean names {sorted(plain)[:3]}...; seen {sorted(names)[:3]}..."
