"""Area "real_models": tiny, randomly initialised models of the libraries people train with (harness/rows/real_models.py:
HF Llama, GPT-2, Qwen2-MoE, BERT, T5; torchtitan Llama3; timm ViT; torchvision ResNet-18), each checked with its own AC
mechanism and with the harness's policies, through the same case builder as ``ac-conformance check``
(harness/rows/modelcase.py): numerics (attributed: a mismatch compiled-without-AC shows too is a backend difference),
every invariant, and whether AC had an effect.  No goldens (library upgrades reshape graphs); the figures are recorded.

Needs the ``models`` dependency group (``make models``); without it every row skips with that reason.  In ``make test``
only :data:`FAST` runs (seconds); the rest is ``slow`` (``make models``, the nightly).  Verdicts the libraries earn
on torch 2.13.0 CPU: GPT-2 under inductor differs from eager compiled with or without AC alike (a backend difference,
stage ``backend_difference``: known failure ``inductor-float32-reduction-order``, which covers the tiny Llama too).  The "AC had no effect" verdict on
a real model (T5's blocks gathered into a ``.layers`` the forward never calls, ``real_models.hf_t5_gathered_layers``)
is shown by tests/test_real_model_verdicts.py, not as a row: a row is a configuration that should pass.
"""

from __future__ import annotations

from harness.core.case import Requires, Selection
from harness.rows import real_models as R
from harness.rows.modelcase import model_case

HF = Requires.module("transformers", "HF models: the models dependency group (make models)")
TITAN = Requires.module("torchtitan", "torchtitan models: the models dependency group (make models)")
TIMM = Requires.module("timm", "timm models: the models dependency group (make models)")
VISION = Requires.module("torchvision", "torchvision models: the models dependency group (make models)")
SLOW = Selection(marker="slow")

# (factory, policy, backends, requirements): every row of the area
ROWS = [
    (R.hf_llama, "full", ("aot_eager", "inductor"), (HF,)),
    (R.hf_llama, "hf", ("aot_eager",), (HF,)),
    (R.hf_llama, "hf_reentrant", ("aot_eager",), (HF,)),
    (R.hf_llama, "every_other_mm", ("aot_eager",), (HF,)),
    (R.hf_gpt2, "full", ("aot_eager", "inductor"), (HF,)),
    (R.hf_gpt2, "selective_op", ("aot_eager",), (HF,)),
    (R.hf_gpt2_gc, "own", ("aot_eager",), (HF,)),
    (R.hf_qwen2_moe, "hf", ("aot_eager",), (HF,)),
    (R.hf_bert, "full", ("aot_eager",), (HF,)),
    (R.hf_bert, "hf", ("aot_eager",), (HF,)),
    (R.hf_t5, "full", ("aot_eager",), (HF,)),
    (R.torchtitan_llama3, "torchtitan_full", ("aot_eager", "inductor"), (TITAN,)),
    (R.torchtitan_llama3, "torchtitan_selective", ("aot_eager",), (TITAN,)),
    (R.torchtitan_llama3, "every_other_mm", ("aot_eager",), (TITAN,)),
    (R.timm_vit, "timm", ("aot_eager",), (TIMM, VISION)),
    (R.timm_vit, "full", ("aot_eager", "inductor"), (TIMM, VISION)),
    (R.resnet18, "full", ("aot_eager",), (VISION,)),
]
FAST = {("timm_vit", "timm")}  # the make-test share: one small model through its own mechanism


def _case(factory, policy, backends, requires):
    name = factory.__name__
    fast = (name, policy) in FAST
    return model_case(factory, policy, name=name, backends=backends, area="real_models", lazy=True,
                      requires=requires, selection=Selection() if fast else SLOW, goldens=()).case


CASES = [_case(*row) for row in ROWS]
