"""Meta tests of the checkpoint contract (harness/rows/contract.py, docs/contract.md, docs/contract-coverage.md).

- every clause of docs/contract.md has cells in suites/test_contract.py, and every cell's clause is in the doc;
- every quote is verbatim in torch/utils/checkpoint.py;
- the committed coverage table is current;
- every known failure of a contract cell names existing cells, an existing repro and its pinned check, and the
  aot_eager_min_cut cells it selects run in make test;
- for every clause, breaking the promise inside torch (monkeypatch) makes its eager cell fail through the suite's own
  path (harness/core/suite.py ``check_cell``) with a failure naming the clause's cell (and the oracles pass on
  unbroken torch: the suite's eager cells).
"""

from __future__ import annotations

import contextlib
import difflib
import re

import pytest
import torch
import torch.utils.checkpoint as cp

from harness.core import known_failures
from harness.core.case import Cell
from harness.core.suite import CellFailure, check_cell
from harness.rows import contract
from harness.rows.collect import collect
from harness.tools import contract_coverage

CP = cp.CheckpointPolicy


def _doc_ids() -> list[str]:
    return re.findall(r"^### `([^`]+)`$", contract.CLAUSES_DOC.read_text(), flags=re.M)


def _cells() -> list[Cell]:
    """The contract's cells as the suite collects them (CUDA programs included, collected as skipped on CPU)."""
    return [c.cell for c in collect("contract", "cpu")]


def test_every_clause_in_the_doc_has_cells_and_every_cell_a_clause():
    doc = _doc_ids()
    assert len(doc) == len(set(doc)), f"expected unique clause ids in docs/contract.md; saw duplicates in {doc}"
    cells = _cells()
    clauses_with_cells = {c.case.build.clause.id for c in cells}
    missing = [i for i in doc if i not in clauses_with_cells]
    assert not missing, (f"expected every clause of docs/contract.md to have cells in suites/test_contract.py; "
                         f"saw clauses without cells: {missing}")
    orphans = sorted(clauses_with_cells - set(doc))
    assert not orphans, f"expected every cell's clause to be listed in docs/contract.md; saw unlisted: {orphans}"
    by_clause = {}
    for c in cells:
        by_clause.setdefault(c.case.build.clause.id, set()).add(c.case.build.variant)
    partial = {c: sorted(set(contract.VARIANTS) - v) for c, v in by_clause.items() if v != set(contract.VARIANTS)}
    assert not partial, f"expected every clause to have eager and all compiled variants; saw missing: {partial}"
    ids = [c.id for c in cells]
    assert all(c.id == c.case.name == c.case.build.name for c in cells) and len(set(ids)) == len(ids), (
        "expected one cell per contract case, named as the case (<clause>[-<program>]-<mode>-<variant>), unique")


def test_quotes_are_verbatim_in_torch_and_in_the_doc():
    source = " ".join(open(cp.__file__).read().split())
    doc = " ".join(contract.CLAUSES_DOC.read_text().split())
    bad = [(c.id, f) for c in contract.CLAUSES for f in contract.quote_fragments(c) if f not in source]
    assert not bad, (f"expected every clause quote to appear verbatim (whitespace-normalized) in {cp.__file__} "
                     f"(torch {torch.__version__}); saw fragments not found: {bad}")
    undocumented = [c.id for c in contract.CLAUSES if c.quote not in doc]
    assert not undocumented, f"expected docs/contract.md to quote each clause as harness/rows/contract.py does; saw " \
                             f"clauses whose quote differs: {undocumented}"


def test_committed_contract_table_is_current():
    fresh = contract_coverage.build_table()
    committed = contract_coverage.TABLE.read_text() if contract_coverage.TABLE.exists() else ""
    if committed != fresh:
        diff = "".join(difflib.unified_diff(committed.splitlines(True), fresh.splitlines(True),
                                            "docs/contract-coverage.md (committed)", "(regenerated)", n=1))
        raise AssertionError("expected docs/contract-coverage.md to equal the regenerated table; saw a stale one: "
                             f"run `python -m harness.tools.contract_coverage` and commit it. Difference:\n{diff[:6000]}")


def test_table_lists_every_clause_with_cells_and_verdicts():
    table = contract_coverage.build_table()
    for c in contract.CLAUSES:
        row = next((line for line in table.splitlines() if line.startswith(f"| `{c.id}` |")), None)
        assert row is not None, f"[{c.id}] expected a row in the coverage table; saw none"
        cols = [x.strip() for x in row.strip("|").split(" | ")]
        assert len(cols) == 6 and int(cols[3]) > 0 and cols[4] and cols[5], (
            f"[{c.id}] expected a row with cells > 0, an eager and a compiled verdict; saw {cols}")


def test_release_gates_skip_only_their_cells_as_cannot_run(monkeypatch):
    from harness.core import torch_api

    cells = _cells()
    for c in contract.CLAUSES:
        for g in c.gates:
            assert g.difference in torch_api.RELEASE_DIFFERENCES, f"[{c.id}] gate on an unlisted difference"
            assert any(x.case.build.clause is c and g.covers(x.case.build.program, x.case.build.reentrant,
                                                             x.case.build.variant) for x in cells), (
                f"[{c.id}] gate covers no cell")
    fo, det = "sac.policy.forward_only-nonreentrant-", "ckpt.determinism.invalid-nonreentrant-"
    expected = {"2.11.0": {fo + v for v in contract.VARIANTS} | {det + v for v in contract.COMPILED}
                | {"ckpt.saved_tensor_hooks-counting_hooks-nonreentrant-eager"},
                "2.12.1": {fo + "eager"}, "2.13.0": set()}
    for version, ids in expected.items():
        monkeypatch.setattr(torch, "__version__", version)
        # on a CUDA collection the CUDA programs' own requirement is met: what is left are the release gates
        gated = {x.id: why for x in cells if (why := x.case.unmet_requirement("cuda"))}
        assert set(gated) == ids, f"torch {version}: expected gated cells {sorted(ids)}, saw {sorted(gated)}"
        unread = {i: w for i, w in gated.items() if not (torch_api.cannot_run_reason(w) or "").startswith(
            "declared_torch_requirement:")}
        assert not unread, f"expected cannot_run_reason to read every gate's message; saw {unread}"
        skipped = {c.id for c in collect("contract", "cpu") if c.skip and "CUDA" not in c.skip}
        assert skipped == ids, f"torch {version}: expected the collection to skip {sorted(ids)}, saw {sorted(skipped)}"


def test_known_failures_name_cells_repros_and_checks_and_run_in_make_test():
    """Contract cells' known failures are ordinary entries (case names, the oracle's named check as the stage); the
    aot_eager_min_cut cells they select run in make test (Clause.fast), so every change sees them fail as expected."""
    collected = {c.cell.id: c for c in collect("contract", "cpu")}
    entries = [e for e in known_failures.load() if any(name in collected for name in e.select.cases)]
    assert entries, "expected known failures selecting contract cells"
    for e in entries:
        unknown = [n for n in e.select.cases if n not in collected]
        assert not unknown, f"[{e.id}] expected every selected case to be a contract cell; saw unknown {unknown}"
        assert (contract.ROOT / e.repro).exists(), f"[{e.id}] expected the repro {e.repro} to exist; it does not"
        assert e.upstream, f"[{e.id}] expected an upstream reference (or 'none found'); saw an empty one"
        assert all(stage.startswith("case_check:") for stage, _ in e.breaks), (
            f"[{e.id}] expected each pinned stage to be a contract check (case_check:<check>); saw {e.breaks}")
        slow = [n for n in e.select.cases if n.endswith("-aot_eager_min_cut") and collected[n].slow]
        assert not slow, f"[{e.id}] expected its aot_eager_min_cut cells in make test (Clause.fast); saw slow {slow}"


def test_every_clause_has_a_breaker():
    missing = [c.id for c in contract.CLAUSES if c.id not in BREAKERS and c.id not in FIXES]
    assert not missing, f"expected a meta test (breaker) for every clause; saw clauses without one: {missing}"


# ---------------------------------------------------------------------------------------------------------------
# breakers: realistic faults in torch's AC code, applied with monkeypatch
# ---------------------------------------------------------------------------------------------------------------

def _wrap_checkpoint(mp, fn):
    orig = cp.checkpoint
    mp.setattr(cp, "checkpoint", lambda function, *a, **k: fn(orig, function, *a, **k))


def _wrap_sac(mp, transform_policy=None, allow=None):
    orig = cp.create_selective_checkpoint_contexts

    def create(policy_fn_or_list, allow_cache_entry_mutation=False):
        if transform_policy is not None:
            policy_fn_or_list = transform_policy(policy_fn_or_list)
        return orig(policy_fn_or_list, allow if allow is not None else allow_cache_entry_mutation)

    mp.setattr(cp, "create_selective_checkpoint_contexts", create)


def _as_fn(p):
    if isinstance(p, list):
        return lambda ctx, f, *a, **k: CP.MUST_SAVE if f in p else CP.PREFER_RECOMPUTE
    return p


def b_rng_not_restored(mp):
    mp.setattr(torch, "set_rng_state", lambda state: None)


def b_rng_always_preserved(mp):
    orig_apply = cp.CheckpointFunction.apply
    mp.setattr(cp.CheckpointFunction, "apply", lambda fn, preserve, *a: orig_apply(fn, True, *a))
    orig_gen = cp._checkpoint_without_reentrant_generator
    mp.setattr(cp, "_checkpoint_without_reentrant_generator",
               lambda fn, preserve, *rest, **kw: orig_gen(fn, True, *rest, **kw))


def b_autocast_not_captured(mp):
    off = {"enabled": False, "dtype": torch.bfloat16, "cache_enabled": True}
    mp.setattr(cp, "_get_autocast_kwargs", lambda device_type="cuda": (dict(off), dict(off)))


def b_determinism_default_off(mp):
    mp.setitem(cp._allowed_determinism_checks_to_fns, "default", lambda x: None)


def b_determinism_accepts_anything(mp):
    mp.setitem(cp._allowed_determinism_checks_to_fns, "bogus", lambda x: None)


def b_debug_no_traces(mp):
    mp.setattr(cp, "_get_debug_context_and_cb", lambda: (cp.noop_context_fn, None))


def b_debug_global_ignored(mp):
    mp.setattr(cp, "set_checkpoint_debug_enabled", lambda enabled: contextlib.nullcontext())


def _force_early_stop(mp, value):
    orig = cp._CheckpointFrame.__init__

    def init(self, recompute_fn, early_stop, *a, **k):
        orig(self, recompute_fn, value, *a, **k)

    mp.setattr(cp._CheckpointFrame, "__init__", init)


def b_early_stop_off(mp):
    _force_early_stop(mp, False)


def b_early_stop_always(mp):
    _force_early_stop(mp, True)


def b_sequential_not_checkpointed(mp):
    mp.setattr(cp, "checkpoint", lambda fn, *a, use_reentrant=None, preserve_rng_state=True, **k: fn(*a))


def b_kwargs_dropped_in_recompute(mp):
    orig = cp._checkpoint_without_reentrant_generator
    mp.setattr(cp, "_checkpoint_without_reentrant_generator", lambda fn, *rest, **kw: orig(fn, *rest))


def b_reentrant_binds_kwargs(mp):
    def ck(orig, function, *a, use_reentrant=None, **k):
        if use_reentrant:
            extra = {n: k.pop(n) for n in list(k) if n not in ("preserve_rng_state",)}
            function = (lambda f, kw: (lambda *x: f(*x, **kw)))(function, extra)
        return orig(function, *a, use_reentrant=use_reentrant, **k)

    _wrap_checkpoint(mp, ck)


def b_reentrant_no_warning(mp):
    mp.setattr(cp, "check_backward_validity", lambda inputs: None)


def b_nonreentrant_requires_grad_input(mp):
    def ck(orig, function, *a, use_reentrant=None, **k):
        if not use_reentrant and not any(isinstance(t, torch.Tensor) and t.requires_grad for t in a):
            with torch.no_grad():
                return function(*a)
        return orig(function, *a, use_reentrant=use_reentrant, **k)

    _wrap_checkpoint(mp, ck)


def b_nested_inner_skipped(mp):
    def ck(orig, function, *a, use_reentrant=None, **k):
        if getattr(function, "__name__", "") == "inner":
            return function(*a)
        return orig(function, *a, use_reentrant=use_reentrant, **k)

    _wrap_checkpoint(mp, ck)


def b_hooks_not_installed(mp):
    mp.setattr(cp, "_checkpoint_hook", lambda frame: contextlib.nullcontext())


def b_graph_task_id_constant(mp):
    mp.setattr(torch._C, "_current_graph_task_id", lambda: 0)


def b_checkpoint_invalid(mp):
    mp.setattr(torch.autograd, "_is_checkpoint_valid", lambda: False)


def b_checkpoint_always_valid(mp):
    mp.setattr(torch.autograd, "_is_checkpoint_valid", lambda: True)


def b_reentrant_ignores_context_fn_debug(mp):
    def ck(orig, function, *a, use_reentrant=None, **k):
        if use_reentrant:
            k.pop("context_fn", None)
            k.pop("debug", None)
        return orig(function, *a, use_reentrant=use_reentrant, **k)

    _wrap_checkpoint(mp, ck)


def b_contexts_swapped(mp):
    orig = cp._checkpoint_without_reentrant_generator

    def gen(fn, preserve, context_fn, *rest, **kw):
        return orig(fn, preserve, lambda: tuple(reversed(context_fn())), *rest, **kw)

    mp.setattr(cp, "_checkpoint_without_reentrant_generator", gen)


def b_sac_never_caches(mp):
    mp.setattr(cp._CachedTorchDispatchMode, "__torch_dispatch__",
               lambda self, func, types, args=(), kwargs=None: func(*args, **(kwargs or {})))


def b_sac_saves_everything(mp):
    _wrap_sac(mp, lambda p: (lambda ctx, f, *a, **k: CP.MUST_SAVE))


def b_prefer_recompute_saves(mp):
    def t(p):
        p = _as_fn(p)

        def q(ctx, f, *a, **k):
            r = p(ctx, f, *a, **k)
            return CP.PREFER_SAVE if r == CP.PREFER_RECOMPUTE else r

        return q

    _wrap_sac(mp, t)


def b_is_recompute_true(mp):
    class Ctx(cp.SelectiveCheckpointContext):
        def __init__(self, *, is_recompute, op_output=None):
            super().__init__(is_recompute=True, op_output=op_output)

    mp.setattr(cp, "SelectiveCheckpointContext", Ctx)


def b_policy_called_in_recompute(mp):
    """The pre-2.5 behaviour: the cached mode calls the policy again (is_recompute=True) during recompute."""
    orig_create = cp.create_selective_checkpoint_contexts
    orig_dispatch = cp._CachedTorchDispatchMode.__torch_dispatch__

    def create(policy_fn_or_list, allow_cache_entry_mutation=False):
        caching, cached = orig_create(policy_fn_or_list, allow_cache_entry_mutation)
        cached._contract_policy = caching.policy_fn
        return caching, cached

    def dispatch(self, func, types, args=(), kwargs=None):
        policy = getattr(self, "_contract_policy", None)
        if policy is not None and func not in cp.SAC_IGNORED_OPS:
            policy(cp.SelectiveCheckpointContext(is_recompute=True), func, *args, **(kwargs or {}))
        return orig_dispatch(self, func, types, args, kwargs)

    mp.setattr(cp, "create_selective_checkpoint_contexts", create)
    mp.setattr(cp._CachedTorchDispatchMode, "__torch_dispatch__", dispatch)


def b_policy_called_twice(mp):
    def t(p):
        p = _as_fn(p)

        def q(ctx, f, *a, **k):
            p(ctx, f, *a, **k)
            return p(ctx, f, *a, **k)

        return q

    _wrap_sac(mp, t)


def b_mutation_unchecked(mp):
    mp.setattr(cp._VersionWrapper, "get_val", lambda self, allow_cache_entry_mutation: self.val)


def b_allow_flag_ignored(mp):
    _wrap_sac(mp, allow=False)


def b_bool_inverted(mp):
    mp.setattr(cp, "_policy_from_bool", lambda b: CP.PREFER_RECOMPUTE if b else CP.MUST_SAVE)


def b_op_list_ignored(mp):
    _wrap_sac(mp, lambda p: [] if isinstance(p, list) else p)


def b_sac_cache_not_consumed(mp):
    orig = cp._CachedTorchDispatchMode.__torch_dispatch__

    def dispatch(self, func, types, args=(), kwargs=None):
        key = cp._sac_storage_key(func, args)
        idx = self.func_counter[key]
        entry = self.storage.get(key, {}).get(idx)
        out = orig(self, func, types, args, kwargs)
        if entry is not None and entry is not cp._RECOMPUTE and entry is not cp._CONSUMED:
            self.storage[key][idx] = entry
        return out

    mp.setattr(cp._CachedTorchDispatchMode, "__torch_dispatch__", dispatch)


def _kit(fault_id: str):
    """A breaker that is a fault of the kit (harness/tools/faults/catalogue.py): its edits of a torch function's
    source swapped in as the function's ``__code__`` (undone by monkeypatch)."""
    def breaker(mp):
        from harness.tools.faults import faults
        from harness.tools.faults.patching import edited_code, function_of, resolve

        fault = faults()[fault_id]
        func = function_of(resolve(fault.target))
        mp.setattr(func, "__code__", edited_code(func, fault.edits))

    breaker.__name__ = "kit_" + fault_id.replace("-", "_")
    return breaker


# clause -> [(breaker, cells it must break: (program or None for all, mode or None for all))]
R, N = True, False
BREAKERS = {
    "ckpt.rng.preserved": [(b_rng_not_restored, [(None, None)]), (_kit("eager-rng-fork-disabled"), [(None, N)])],
    "ckpt.rng.not_preserved": [(b_rng_always_preserved, [(None, None)])],
    "ckpt.autocast": [(b_autocast_not_captured, [("cpu-outside", None)])],
    "ckpt.determinism.default": [(b_determinism_default_off, [("default", N), ("dtype", N)]),
                                 (_kit("determinism-check-ignores-dtype"), [("dtype", N)])],
    "ckpt.determinism.invalid": [(b_determinism_accepts_anything, [(None, None)])],
    "ckpt.debug": [(b_debug_no_traces, [("debug-true", N)])],
    "ckpt.debug.global": [(b_debug_global_ignored, [("on-overrides-false", N), ("off-overrides-true", N)])],
    "ckpt.early_stop": [(b_early_stop_off, [(None, N)])],
    "ckpt.early_stop.disabled": [(b_early_stop_always, [(None, None)])],
    "seq.segments": [(b_sequential_not_checkpointed, [("segments", None)])],
    "ckpt.kwargs": [(b_kwargs_dropped_in_recompute, [(None, N)]), (b_reentrant_binds_kwargs, [(None, R)])],
    "ckpt.requires_grad_inputs": [(b_reentrant_no_warning, [(None, R)]),
                                  (b_nonreentrant_requires_grad_input, [(None, N)])],
    "ckpt.nested": [(b_nested_inner_skipped, [(None, None)])],
    "ckpt.saved_tensor_hooks": [(b_hooks_not_installed, [("counting_hooks", N)])],
    "ckpt.backward_twice": [(b_graph_task_id_constant, [("retain_graph", N)]),
                            (b_checkpoint_invalid, [("retain_graph", R)])],
    "ckpt.grad_api": [(b_checkpoint_always_valid, [(None, R)])],
    "ckpt.reentrant.rejects_context_fn_debug": [(b_reentrant_ignores_context_fn_debug, [(None, None)])],
    "ckpt.context_fn": [(b_contexts_swapped, [("sac-modes", N)])],
    "sac.policy.save": [(b_sac_never_caches, [(None, None)])],
    "sac.policy.recompute": [(b_sac_saves_everything, [(None, None)])],
    "sac.policy.prefer_recompute_is_vanilla": [(b_prefer_recompute_saves, [(None, None)])],
    "sac.policy.forward_only": [(b_is_recompute_true, [(None, None)]), (b_policy_called_in_recompute, [(None, None)]),
                                (b_policy_called_twice, [(None, None)])],
    # (a policy also called in recompute does not change what a forward-counting policy decides: the cached mode
    # replays the forward's decisions; sac.policy.forward_only catches that regression)
    "sac.policy.counting": [(b_policy_called_twice, [(None, None)])],
    "sac.mutation_error": [(b_mutation_unchecked, [(None, None)])],
    "sac.allow_cache_entry_mutation": [(b_allow_flag_ignored, [(None, None)])],
    "sac.bool_policy": [(b_bool_inverted, [(None, None)])],
    "sac.op_list": [(b_op_list_ignored, [("op-list", None)])],
    "sac.backward_twice": [(b_sac_cache_not_consumed, [(None, None)])],
    "ckpt.unpack_once": [(_kit("unpack-twice-allowed"), [(None, N)])],
}


def _offload_as(mp, must, prefer):
    """SAC policies whose CPU-offload decisions read as ``must`` / ``prefer`` (the policy function wrapped)."""

    def t(p):
        p = _as_fn(p)

        def q(ctx, f, *a, **k):
            r = p(ctx, f, *a, **k)
            return {CP.MUST_CPU_OFFLOAD: must, CP.PREFER_CPU_OFFLOAD: prefer}.get(r, r)

        return q

    _wrap_sac(mp, t)


def f_offload_saved(mp):
    """The documented behaviour, for the clause whose eager cells are a known failure on 2.13: cache offload
    decisions like saves (on CPU, 'offload to CPU' is 'keep')."""
    _offload_as(mp, CP.MUST_SAVE, CP.PREFER_SAVE)


def b_offload_recomputed(mp):
    """The defect of known failure contract-sac-cpu-offload-recomputed-in-eager, planted: offload decisions are
    recomputed (torch 2.11-2.14 cache only MUST_SAVE/PREFER_SAVE outputs), whatever torch ships."""
    _offload_as(mp, CP.MUST_RECOMPUTE, CP.PREFER_RECOMPUTE)


# clauses whose eager behaviour on the pinned torch already breaks the promise: clause -> (the documented behaviour
# patched in: the oracle passes; the defect planted: the oracle fails, naming the clause), so the test means the same
# once torch is fixed
FIXES = {"sac.policy.cpu_offload": (f_offload_saved, b_offload_recomputed)}


class _NoGoldens:
    """A contract cell snapshots nothing: the goldens check_cell compares are none."""

    def keep_existing(self) -> None:
        pass

    def assert_match(self, texts) -> int:
        assert not texts, f"expected a contract cell to record no graph text; saw {sorted(texts)}"
        return 0


class _Record:
    known_failures: list = []  # as torch ships, without known_failures.toml: the oracle alone decides

    def __call__(self, key, value) -> None:
        pass


def _check(cell: Cell) -> None:
    """The cell through the suite's own path (run, the clause's oracle as the row's check, verdicts)."""
    check_cell(cell, _NoGoldens(), _Record())


def _eager_cells(clause_id, which):
    out = []
    for cell in _cells():
        site = cell.case.build
        if site.clause.id != clause_id or site.variant != "eager" or site.program in site.clause.requires_cuda:
            continue
        if any((p is None or p == site.program) and (m is None or m == site.reentrant) for p, m in which):
            out.append(cell)
    return out


_BREAK_PARAMS = [pytest.param(cid, b, cell, id=f"{cid}-{b.__name__}-{cell.id}")
                 for cid, entries in BREAKERS.items() for b, which in entries for cell in _eager_cells(cid, which)]


@pytest.mark.parametrize("clause_id,breaker,contract_cell_", _BREAK_PARAMS)
def test_breaking_the_promise_fails_the_oracle(clause_id, breaker, contract_cell_, monkeypatch):
    with monkeypatch.context() as mp:
        breaker(mp)
        try:
            _check(contract_cell_)
        except CellFailure as e:
            checks = [stage for stage, _ in e.failures]
            assert str(e).startswith(f"{clause_id}-") and all(s.startswith("case_check:") for s in checks), (
                f"expected the failure to name a cell of clause {clause_id!r} and only its oracle's checks; "
                f"saw {str(e)[:300]}")
            return
    raise AssertionError(f"[{clause_id}] expected {breaker.__name__} to make the oracle of {contract_cell_.id} fail; "
                         f"saw every check pass")


def test_every_breaker_entry_selects_cells():
    empty = [(cid, b.__name__) for cid, entries in BREAKERS.items() for b, which in entries
             if not _eager_cells(cid, which)]
    assert not empty, f"expected each breaker to select at least one eager cell; saw none for {empty}"


@pytest.mark.parametrize("clause_id", sorted(FIXES))
def test_known_eager_failure_oracle_passes_with_documented_behaviour(clause_id, monkeypatch):
    cells = _eager_cells(clause_id, [(None, None)])
    assert cells, f"[{clause_id}] expected eager cells; saw none"
    fix, defect = FIXES[clause_id]
    for cell in cells:
        with monkeypatch.context() as mp:
            defect(mp)
            with pytest.raises(CellFailure, match=re.escape(f"{clause_id}-")):
                _check(cell)  # the known failure's defect
        with monkeypatch.context() as mp:
            fix(mp)
            _check(cell)  # the documented behaviour: passes
