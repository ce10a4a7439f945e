"""The distributed scenarios: what one distributed cell runs (declaration layer, like harness/core/case.py for case cells).

A :class:`Scenario` is one step of a small Llama-style model (harness/rows/models.py) on 2 gloo ranks, parallelized and
compiled the way torchtitan composes them (harness/tools/training.py runs it).  ``FAST`` is the default selection (one
2-rank launch for all of them); ``SLOW`` runs nightly, one launch per cell.  The scenario key is the cell id: the
summary goldens (``golden/cpu/test_distributed/``) and the known-failure selector ``distributed`` use it.
"""

from __future__ import annotations

import dataclasses
import functools

from harness.core import policies
from harness.core.case import Axes, AxesSpec, Case, Cell


@dataclasses.dataclass(frozen=True)
class Scenario:
    parallel: str  # fsdp2 | ddp | tp | tp_sp
    model: str = "llama"  # llama | moe
    policy: str = "full"  # a harness.core.policies name
    policy_params: tuple = ()  # ((key, value), ...)
    via: str = "wrapper"  # wrapper | function | apply_ac
    compile: str = "per_block"  # none | per_block | whole
    backend: str = "record"  # record (aot_eager through the pipeline's recording backend) | inductor | aot_eager
    autocast: str | None = None  # "bfloat16": the step under torch.autocast
    fsdp_mp: bool = False  # FSDP2 MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)
    n_layers: int = 2
    batch: int = 4
    seq: int = 16
    bucket_cap_mb: float = 0.02  # DDP: small buckets, so DDPOptimizer splits the graph inside the blocks
    # DDPOptimizer sizes its first bucket with dist._DEFAULT_FIRST_BUCKET_BYTES (1 MiB) while DDP itself uses
    # bucket_cap_mb for it when that is given, and asserts first <= cap: bucket_cap_mb < 1 fails to compile
    # (findings/ddp_compile_small_bucket_cap_asserts.py).  The workaround aligns the constant with the cap.
    ddp_first_bucket_workaround: bool = True
    # Dynamo config for the step; MoE scenarios set capture_dynamic_output_shape_ops: without it the nonzero breaks
    # the graph and a checkpointed MoE block is not compiled at all (suites/test_ac_policies.py)
    dynamo_config: tuple = ()

    @property
    def dtype(self) -> str:
        return "bfloat16" if self.autocast or self.fsdp_mp else "float32"

    @property
    def recorded(self) -> bool:
        """Compiled through the recording backend: its graphs are analysed (invariants, summary goldens)."""
        return self.backend == "record" and self.compile != "none"

    def get_policy(self) -> policies.Policy:
        return policies.get(self.policy, **dict(self.policy_params))


S = Scenario
# The default selection: at most 4 cells of one block each ("-1layer"), one launch for all of them.
FAST = {
    "fsdp2-per_block-checkpoint_wrapper-full-fp32-1layer": S("fsdp2", via="wrapper", compile="per_block", policy="full", n_layers=1),
    "ddp-whole-checkpoint_fn-full-fp32-1layer": S("ddp", via="function", compile="whole", policy="full", n_layers=1),
    # Saves CPU attention too: torchtitan's list (the default) recomputes it, which under TP hits the known failure
    # tp-compiled-ac-rng-op-saves-mesh-as-tensor and would stop the rest of this shared launch.
    "tp_sp-per_block-wrapper-selective_op-fp32-1layer": S("tp_sp", via="wrapper", compile="per_block", policy="selective_op", n_layers=1,
                                                          policy_params=(("save", policies.DEFAULT_SAVE + ("aten._scaled_dot_product_flash_attention_for_cpu.default",)),)),
    "fsdp2-whole-apply_ac-every_other_mm-mp_bf16-1layer": S("fsdp2", via="apply_ac", compile="whole", policy="every_other_mm",
                                                     fsdp_mp=True, n_layers=1),
}

# The nightly selection: one launch per cell.
SLOW: dict[str, Scenario] = {}
for _via in ("wrapper", "function", "apply_ac"):
    for _comp in ("per_block", "whole"):
        SLOW[f"fsdp2-{_comp}-{_via}-full-fp32"] = S("fsdp2", via=_via, compile=_comp, policy="full")
for _pol in ("selective_op", "every_other_mm", "selective_layer", "memory_budget"):
    SLOW[f"fsdp2-per_block-wrapper-{_pol}-fp32"] = S("fsdp2", policy=_pol)
SLOW["fsdp2-per_block-wrapper-full-autocast_bf16"] = S("fsdp2", policy="full", autocast="bfloat16")
SLOW["fsdp2-per_block-wrapper-full-mp_bf16"] = S("fsdp2", policy="full", fsdp_mp=True)
SLOW["fsdp2-eager-wrapper-full-fp32"] = S("fsdp2", policy="full", compile="none")
SLOW["ddp-whole-wrapper-selective_op-fp32"] = S("ddp", via="wrapper", compile="whole", policy="selective_op")
SLOW["ddp-whole-checkpoint_fn-full-one_bucket-fp32"] = S("ddp", via="function", compile="whole", policy="full",
                                                         bucket_cap_mb=25, ddp_first_bucket_workaround=False)
SLOW["ddp-whole-checkpoint_fn-full-autocast_bf16"] = S("ddp", via="function", compile="whole", policy="full",
                                                       autocast="bfloat16")
# DDPOptimizer's first bucket ignores DDP's bucket_cap_mb: bucket_cap_mb < 1 cannot compile (known_failures.toml).
SLOW["ddp-whole-checkpoint_fn-full-small_bucket_no_workaround-fp32"] = S(
    "ddp", via="function", compile="whole", policy="full", ddp_first_bucket_workaround=False)
for _par in ("tp", "tp_sp"):
    for _pol in ("full", "selective_op", "every_other_mm"):
        SLOW[f"{_par}-per_block-wrapper-{_pol}-fp32"] = S(_par, policy=_pol)
    SLOW[f"{_par}-whole-wrapper-selective_op-fp32"] = S(_par, policy="selective_op", compile="whole")
MOE = (("capture_dynamic_output_shape_ops", True),)  # one graph per MoE block
SLOW["moe-fsdp2-per_block-wrapper-full-fp32"] = S("fsdp2", model="moe", policy="full", dynamo_config=MOE)
SLOW["moe-ddp-whole-checkpoint_fn-selective_op-fp32"] = S("ddp", model="moe", via="function", compile="whole",
                                                          policy="selective_op", dynamo_config=MOE)
SLOW["fsdp2-per_block-wrapper-full-inductor-fp32"] = S("fsdp2", policy="full", backend="inductor")
SLOW["tp_sp-per_block-wrapper-selective_op-inductor-fp32"] = S("tp_sp", policy="selective_op", backend="inductor")

ALL = {**FAST, **SLOW}
assert len(ALL) == len(FAST) + len(SLOW), "a scenario key is in both FAST and SLOW"


class ScenarioCell(Cell):
    """A distributed scenario as a cell of the database (area "distributed", id = the scenario key): what known
    failures select, what the golden review counts as a live cell, what the verdicts are concluded for."""

    @property
    def id(self) -> str:
        return self.case.name


@functools.cache
def cell(key: str) -> ScenarioCell:
    if key not in ALL:
        raise KeyError(f"no distributed scenario {key!r}")
    case = Case.stand_in(key, "distributed", "a distributed scenario runs on 2 ranks (suites/test_distributed.py), "
                         "not through the pipeline", axes=AxesSpec(devices=("cpu",)))
    return ScenarioCell(case, Axes())


def cells() -> list[ScenarioCell]:
    return [cell(k) for k in ALL]
