"""Area "compiled_rng": dropout in a checkpointed region with the compiled code's own RNG, which does not follow
eager's stream (CATALOGUE.md items 14, 30 without ``fallback_random``).

Inductor draws random numbers with its own generator (Philox-based on CUDA), and on CUDA AOTAutograd's
``functionalize_rng_ops`` replaces random ops by ``rngprims.philox_rand`` with an explicit seed and offset.  Neither
matches eager's values, so numerics are checked by the mask-replay oracle of the rng_dropout area: the dropout mask
is read off the compiled forward's output, the program is replayed eagerly with that mask, and the compiled output
and every gradient must equal the replay's.  A backward that recomputed dropout with another mask fails it."""

from __future__ import annotations

from harness.core.case import (AxesSpec, Backend, Case, Checkpoint, CompileSpec, Decompositions, Expect, Numerics,
                          Partitioner, Requires)
from harness.rows.cases.rng_dropout import (_replay_dropout_module, _sac_random_oracle, dropout_module,
                                       mask_replay, sac_random_op)

COMPILED_RNG = Numerics.shape_only(
    "compiled dropout draws from inductor's (or Philox) RNG, not eager's stream; the "
    "mask-replay oracle checks outputs and gradients against an eager replay with the "
    "compiled mask")
_dropout_oracle = mask_replay(lambda out: out != 0, _replay_dropout_module)


def _philox_in_forward_and_backward(run) -> None:
    """functionalize_rng_ops: the forward draws with philox_rand and the backward's recompute replays it."""
    __tracebackhide__ = True
    missing = [kind for kind in ("fw", "bw") if "philox_rand" not in run.texts.get(kind, "")]
    if missing:
        raise AssertionError(f"{run.cell.id}: expected rngprims.philox_rand in the fw and bw graphs "
                             f"(functionalize_rng_ops), missing in {missing}:\n"
                             + "\n".join(f"--- {k} ---\n{run.texts.get(k)}" for k in ("fw", "bw")))
    _dropout_oracle(run)


CASES = [
    Case("compiled_rng_dropout_module_inductor", dropout_module, catalogue=(14,), checkpoint=Checkpoint.REENTRANT,
         axes=AxesSpec(backends=Backend.INDUCTOR), expect=Expect(check=_dropout_oracle), numerics=COMPILED_RNG),
    Case("compiled_rng_sac_random_op_inductor", sac_random_op(True), catalogue=(30,), checkpoint=Checkpoint.SAC,
         axes=AxesSpec(backends=Backend.INDUCTOR), expect=Expect(check=_sac_random_oracle), numerics=COMPILED_RNG),
    # functionalize_rng_ops adds rng_decompositions (torch/_decomp/decompositions_for_rng.py: aten.rand, rand_like ->
    # rngprims.philox_rand) to AOT's table (aot_autograd.py create_aot_dispatcher_function); native_dropout itself is
    # only in extra_random_decomps, which inductor's select_decomp_table carries, so the inductor decompositions are
    # what turn dropout into rand_like and then philox_rand.  Without them the graph keeps native_dropout and no
    # philox_rand appears.  Derived from the source; not yet seen on a GPU.
    Case("compiled_rng_dropout_module_functionalized_philox", dropout_module, catalogue=(14,),
         checkpoint=Checkpoint.REENTRANT,
         compile=CompileSpec(config={"functorch": {"functionalize_rng_ops": True}}, decompositions=Decompositions.INDUCTOR),
         axes=AxesSpec(partitioners=Partitioner.MIN_CUT, devices="cuda"),
         expect=Expect(check=_philox_in_forward_and_backward),
         requires=Requires.cuda("functionalize_rng_ops (philox_rand) is CUDA-only"), numerics=COMPILED_RNG),
]
