"""Real models, tiny: factories for the libraries people train with (the ``models`` dependency group of pyproject.toml,
``make models``), each ``factory(ac=...)``-free: ``() -> (model, inputs)``, random init, never a download.

The versions pinned in the group are what these configs were written against: transformers 5.23.0, torchtitan 0.3.0,
timm 1.0.31 and torchvision 0.28.0.  Two of them do not import as published beside the CPU torch 2.13.0 wheel:

* **torchvision 0.28.0** from PyPI is a CUDA build: its ``_C`` extension links ``libtorch_cuda.so``, fails to load, and
  ``torchvision/_meta_registrations.py`` then registers fake kernels for ops whose schemas never got defined
  (``RuntimeError: operator torchvision::nms does not exist``).  :func:`import_torchvision` defines those schemas
  (copied from the extension's ``TORCH_LIBRARY(torchvision, m)``) without kernels before the import: the models
  (ResNet, and timm, which imports torchvision for ``FrozenBatchNorm2d``) work; the detection ops (nms, roi_align,
  deform_conv2d) raise if called.  The alternative, the CPU wheel from PyTorch's own index, is not on PyPI.
* **torchtitan 0.3.0** imports triton at import time (``models.common.moe`` -> ``token_dispatcher`` ->
  ``distributed.minimal_async_ep.kernels``) for expert-parallel GPU kernels the dense Llama3 never calls.  `make
  install` installs triton (the emulated user-kernel cells), and with it the real module imports on CPU (checked
  with torchtitan 0.3.0 and triton 3.9.0); where triton is missing :func:`import_torchtitan` puts a stand-in for
  ``torchtitan.distributed.minimal_async_ep`` in ``sys.modules`` (its functions raise).  torchtitan
  0.3.0 also refuses SDPA for language models (it wants FlexAttention, which has no CPU backward):
  :func:`torchtitan_llama3` builds the configs with flex and swaps each block's inner attention for torchtitan's own
  ``ScaledDotProductAttention`` (causal), the CPU-runnable attention the issue asks for.

``HF_HUB_OFFLINE=1`` is set on import: nothing here may reach the hub.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types

import torch
import torch.nn as nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VERSIONS = {"transformers": "5.23.0", "torchtitan": "0.3.0", "timm": "1.0.31", "torchvision": "0.28.0"}
SEQ, BATCH, VOCAB = 16, 2, 128

TORCHVISION_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "box_iou_rotated(Tensor boxes1, Tensor boxes2) -> Tensor",
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "int sampling_ratio, bool aligned) -> Tensor",
    "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "SymInt batch_size, SymInt channels, SymInt height, SymInt width, int sampling_ratio, bool aligned) -> Tensor",
    "qroi_align(Tensor input, Tensor rois, float input_scale, int input_zero_point, float rois_scale, "
    "int rois_zero_point, float spatial_scale, SymInt pooled_height, SymInt pooled_width, int sampling_ratio, "
    "bool aligned) -> Tensor",
    "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "int sampling_ratio) -> (Tensor, Tensor)",
    "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
    "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, SymInt batch_size, SymInt channels, "
    "SymInt height, SymInt width) -> Tensor",
    "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) "
    "-> (Tensor, Tensor)",
    "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",
    "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) "
    "-> (Tensor, Tensor)",
    "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
    "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width) "
    "-> Tensor",
    "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, SymInt stride_h, "
    "SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups, "
    "SymInt offset_groups, bool use_mask) -> Tensor",
    "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, "
    "SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, "
    "SymInt groups, SymInt offset_groups, bool use_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
)
_TORCHVISION_LIB: list = []  # the Library defining the schemas lives as long as the process


def import_torchvision():
    """``import torchvision``, defining its op schemas first where its extension cannot load (see the docstring).
    transformers and timm import torchvision themselves where it is installed: call this before importing them."""
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is None:
        return sys.modules["torchvision"]
    try:
        torch.ops.torchvision.nms.default  # noqa: B018 - defined already (a working extension, or an earlier call)
    except (AttributeError, RuntimeError):
        lib = torch.library.Library("torchvision", "DEF")
        for schema in TORCHVISION_SCHEMAS:
            lib.define(schema)
        _TORCHVISION_LIB.append(lib)
    import torchvision

    return torchvision


def _transformers():
    import_torchvision()
    import transformers

    return transformers


def import_torchtitan():
    """torchtitan's Llama3 and AC modules, with the triton-only expert-parallel module stood in (see the docstring)."""
    name = "torchtitan.distributed.minimal_async_ep"
    if name not in sys.modules:
        try:
            import triton  # noqa: F401 - where triton exists, the real module imports
        except ImportError:
            stub = types.ModuleType(name, "stand-in: expert-parallel GPU kernels need triton (harness/rows/real_models.py)")

            def unavailable(*args, **kwargs):
                raise RuntimeError(f"{name} is a stand-in on this machine (no triton): expert parallelism is unavailable")

            for fn in ("combine_op", "dispatch_op", "init_buffer", "maybe_update_minimal_async_ep_config"):
                setattr(stub, fn, unavailable)
            stub.MinimalAsyncEPDispatchMetadata = type("MinimalAsyncEPDispatchMetadata", (), {})
            sys.modules[name] = stub
    from torchtitan.distributed import activation_checkpoint
    from torchtitan.models import llama3

    return llama3, activation_checkpoint


def _ids(vocab: int = VOCAB, seq: int = SEQ, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (BATCH, seq), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------- HuggingFace

def hf_llama():
    """HF Llama, 2 decoder layers (``model.layers``), GQA, SDPA attention; inputs as keyword arguments."""
    LlamaConfig, LlamaForCausalLM = (getattr(_transformers(), n) for n in ('LlamaConfig', 'LlamaForCausalLM'))

    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, use_cache=False)
    return LlamaForCausalLM(cfg), {"input_ids": _ids()}


def hf_gpt2():
    """HF GPT-2, 2 blocks (``transformer.h``, Conv1D: ``addmm``), dropout off."""
    GPT2Config, GPT2LMHeadModel = (getattr(_transformers(), n) for n in ('GPT2Config', 'GPT2LMHeadModel'))

    cfg = GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64, use_cache=False, bos_token_id=0,
                     eos_token_id=0,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg), {"input_ids": _ids()}


def hf_gpt2_gc():
    """HF GPT-2 with its own gradient checkpointing already on (``gradient_checkpointing_enable()``): policy ``own``
    checks it against the same model with it off."""
    model, inputs = hf_gpt2()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return model, inputs


def hf_qwen2_moe():
    """HF Qwen2-MoE, 2 decoder layers of 4 experts (top-2) and a shared expert."""
    Qwen2MoeConfig, Qwen2MoeForCausalLM = (getattr(_transformers(), n) for n in ('Qwen2MoeConfig', 'Qwen2MoeForCausalLM'))

    cfg = Qwen2MoeConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                         shared_expert_intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, max_position_embeddings=64,
                         use_cache=False, decoder_sparse_step=1, mlp_only_layers=[])
    return Qwen2MoeForCausalLM(cfg), {"input_ids": _ids()}


def hf_bert():
    """HF BERT (encoder), 2 layers (``bert.encoder.layer``), masked-LM head; input_ids and attention_mask."""
    BertConfig, BertForMaskedLM = (getattr(_transformers(), n) for n in ('BertConfig', 'BertForMaskedLM'))

    cfg = BertConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, use_cache=False)
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    mask[1, SEQ // 2:] = 0
    return BertForMaskedLM(cfg), {"input_ids": _ids(), "attention_mask": mask}


def _t5():
    T5Config, T5ForConditionalGeneration = (getattr(_transformers(), n) for n in ('T5Config', 'T5ForConditionalGeneration'))

    cfg = T5Config(vocab_size=VOCAB, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
                   dropout_rate=0.0, use_cache=False, decoder_start_token_id=0)
    return T5ForConditionalGeneration(cfg), {"input_ids": _ids(), "decoder_input_ids": _ids(seq=8, seed=1)}


def hf_t5():
    """HF T5, 2 encoder and 2 decoder blocks (``encoder.block``, ``decoder.block``: both found)."""
    return _t5()


class _Gathered(nn.Module):
    """A model whose ``.layers`` is a list the user built from its blocks, which the forward never calls."""

    def __init__(self, inner: nn.Module, blocks: list[nn.Module]):
        super().__init__()
        self.inner = inner
        self.layers = nn.ModuleList(blocks)

    def forward(self, **kwargs):
        return self.inner(**kwargs)


def hf_t5_gathered_layers():
    """T5 with its encoder and decoder blocks gathered into a new ``.layers`` (issue 31): a policy wraps the list's
    entries, but the forward calls the blocks through ``encoder.block`` / ``decoder.block``, never the wrappers."""
    model, inputs = _t5()
    return _Gathered(model, [*model.encoder.block, *model.decoder.block]), inputs


# ------------------------------------------------------------------------------------------- torchtitan

def torchtitan_llama3():
    """torchtitan 0.3.0's Llama3, 2 blocks (``layers``, a ModuleDict), fused QKV, SDPA attention (see the docstring)."""
    llama3, _ = import_torchtitan()
    from torchtitan.models.common import ComplexRoPE, Embedding, Linear, RMSNorm, compute_ffn_hidden_dim
    from torchtitan.models.common.attention import ScaledDotProductAttention

    dim, heads = 64, 4
    cfg = llama3.Llama3Model.Config(
        dim=dim, vocab_size=VOCAB,
        tok_embeddings=Embedding.Config(num_embeddings=VOCAB, embedding_dim=dim, param_init=llama3._EMBEDDING_INIT),
        norm=RMSNorm.Config(normalized_shape=dim, param_init=llama3._NORM_INIT),
        lm_head=Linear.Config(in_features=dim, out_features=VOCAB, param_init=llama3._output_linear_init(dim)),
        layers=llama3._build_llama3_layers(
            fuse_qkv=True, n_layers=2, dim=dim, n_heads=heads, attn_backend="flex",
            hidden_dim=compute_ffn_hidden_dim(dim, multiple_of=32),
            rope=ComplexRoPE.Config(dim=dim // heads, max_seq_len=64, theta=500000, scaling="llama")))
    for layer in cfg.layers:
        layer.attention.inner_attention = ScaledDotProductAttention.Config()
    model = cfg.build()
    if hasattr(model, "init_weights"):
        model.init_weights()
    return model, _ids()


# ------------------------------------------------------------------------------------------- vision

def timm_vit():
    """timm ViT-Tiny shape, 2 blocks (``blocks``), 32x32 images in 8x8 patches."""
    import_torchvision()
    import timm

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                              num_classes=10, embed_dim=64, num_heads=4)
    return model, torch.randn(BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def resnet18():
    """torchvision ResNet-18 in training mode (BatchNorm updates its running statistics), 32x32 images, batch 4."""
    tv = import_torchvision()
    model = tv.models.resnet18(num_classes=10).train()
    return model, torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
