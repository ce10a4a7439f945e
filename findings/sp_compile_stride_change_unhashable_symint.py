"""Sequence parallel under torch.compile: a recompile after an input changes only its stride fails in Dynamo with
``TypeError('unhashable type: non-nested SymInt')`` from the DTensor op (rms_norm in the harness).

The second call to a compiled SequenceParallel module gets an input with the same shape as the first but a different
stride.  Automatic dynamic shapes then mark only that stride dynamic (torch/_dynamo/pgo.py: "marking L['x'] as dynamic";
``create_symbol s7 for L['x'].stride()[0]``).  DTensor.from_local in SequenceParallel's input hook adds ``Eq(s7, 512)``,
so the DTensor's global ``tensor_meta.stride[0]`` is a SymInt whose expression is the number 1024, but it is still a
SymInt.  DTensor's C++ dispatch path (no Python frame lies between the op call and the hash) hashes the input
DTensorSpec.  torch/distributed/tensor/_dtensor_spec.py::DTensorSpec._hash_key includes ``tensor_meta.stride``, and
torch/__init__.py::SymInt.__hash__ raises for every non-nested SymInt.  Dynamo reports it as ``Dynamo failed to run FX
node with fake tensors: call_function rms_norm(DTensor(...Shard(dim=1)...), ...): got TypeError('unhashable type:
non-nested SymInt')``.  A truly dynamic size (mark_dynamic of dim 0 or 1) compiles fine.  LayerNorm and torch.mul on a
from_local DTensor fail the same way (``d * 2`` surfaces as "unsupported operand type(s) for *: 'DTensor' and 'int'").

How the harness gets there (``tp_sp-per_block-*``: llama_tp_plan(sequence_parallel=True), per-block compile, 2 blocks):
both blocks share LlamaBlock.forward's code object.  Block 1 gets the sequence shard ``x.chunk(2, dim=1)[rank]``, which
is non-contiguous (stride (1024, 64, 1)).  Block 2 gets block 1's contiguous output (stride (512, 64, 1),
requires_grad).  That recompiles LlamaBlock.forward with an automatic-dynamic stride.
Minimal conditions (torch 2.13.0+cpu): one compiled SequenceParallel norm called twice with inputs differing only in
stride.  Activation checkpointing is not needed; in the harness the *no-AC baseline* step already fails.  A second
block is needed only to produce the second, differently-strided call, and 1 block passes.  Every rank fails, and a
world of 1 fails too.  Backends aot_eager and inductor fail (it is raised while Dynamo traces).
These avoid it: ``torch._dynamo.config.automatic_dynamic_shapes = False``; ``torch._dynamo.mark_static`` on *every*
input of the compiled code (marking only the model input is not enough, since block 2's input is internal); or making
the sequence shard contiguous (``.contiguous()``) before the first block, which was checked on the 2-block Llama.
Upstream: pytorch#185190 "Make constant SymInts hashable" (fixes pytorch#139111, closes pytorch#157417) describes this
failure: DTensorSpec._hash_key hits SymInt shape/stride entries.  The fix makes SymInt.__hash__ hash by value when the
expression is a number.  A merge was requested on 2026-06-02, but torch 2.13.0's SymInt.__hash__ still raises.
Related: pytorch#152963 (DTensor + dynamic shapes), pytorch#159590, pytorch#151106.

Run: python findings/sp_compile_stride_change_unhashable_symint.py   (2 gloo ranks on 127.0.0.1, CPU)
Exit 1 while it reproduces (the TypeError is raised), 0 once fixed (both compiled calls run and match eager),
2 on anything else.
"""

import os
import socket
import subprocess
import sys

MSG = "unhashable type: non-nested SymInt"


def rank_main(rank: int, port: int) -> int:
    import torch
    import torch.distributed as dist
    import torch.nn as nn
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import SequenceParallel, parallelize_module

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        norm = nn.RMSNorm(64)
        parallelize_module(norm, init_device_mesh("cpu", (2,)), SequenceParallel())  # input: a Shard(1) seq shard
        full = torch.randn(4, 16, 64, generator=torch.Generator().manual_seed(1))
        a = full.chunk(2, dim=1)[rank]  # non-contiguous: stride (1024, 64, 1)
        b = a.contiguous()  # same shape, stride (512, 64, 1)
        step = torch.compile(norm, backend="aot_eager")
        try:
            outs = [step(a), step(b)]  # the second call recompiles with an automatic-dynamic stride
        except Exception as e:  # surfaces as torch._dynamo.exc.TorchRuntimeError
            if MSG in str(e):
                print(f"rank {rank}: reproduced: {MSG}", flush=True)
                return 1
            raise
        same = all(torch.allclose(o.to_local(), norm(t).to_local()) for o, t in zip(outs, (a, b)))
        print(f"rank {rank}: both compiled calls ran; match eager: {same}", flush=True)
        return 0 if same else 2
    finally:
        dist.destroy_process_group()


def main() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, __file__, "--rank", str(r), str(port)], env=env, start_new_session=True)
             for r in range(2)]
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=300))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            print("timed out", file=sys.stderr)
            return 2
    print(f"rank exit codes: {codes}")
    if all(c == 1 for c in codes):
        return 1
    return 0 if all(c == 0 for c in codes) else 2


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--rank":
        sys.exit(rank_main(int(sys.argv[2]), int(sys.argv[3])))
    sys.exit(main())
