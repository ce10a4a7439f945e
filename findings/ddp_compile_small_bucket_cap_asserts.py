"""DDP(bucket_cap_mb < 1) under torch.compile fails: DDPOptimizer asserts its first bucket <= bucket cap.

torch/nn/parallel/distributed.py uses ``bucket_cap_mb`` for the first bucket too when the user sets it (since
pytorch#121640), but torch/_dynamo/backends/distributed.py::DDPOptimizer is built in convert_frame.py with only
``bucket_bytes_cap=ddp_module.bucket_bytes_cap`` and falls back to ``dist._DEFAULT_FIRST_BUCKET_BYTES`` (1 MiB) for
its first bucket, then raises ``AssertionError: First bucket should be smaller/equal to other buckets to get comms
warmed up ASAP`` whenever bucket_cap_mb < 1.  Eager DDP accepts the same module.  (Searched pytorch issues for the
message and "DDPOptimizer first bucket": no report found; pytorch#121640 changed DDP's side only.)

Run: python findings/ddp_compile_small_bucket_cap_asserts.py   (2 gloo ranks on 127.0.0.1, CPU)
Exit 1 while it reproduces (the assertion is raised), 0 once fixed (the compiled DDP step runs), 2 on anything else.
Workaround: set ``torch.distributed._DEFAULT_FIRST_BUCKET_BYTES`` to the bucket cap before the first compiled call.
"""

import os
import socket
import subprocess
import sys

MSG = "First bucket should be smaller/equal to other buckets"


def rank_main(rank: int, port: int) -> int:
    import torch
    import torch.distributed as dist
    import torch.nn as nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = DDP(nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64)), bucket_cap_mb=0.01)
        step = torch.compile(model, backend="aot_eager")
        try:
            step(torch.randn(4, 64)).sum().backward()
        except Exception as e:  # the backend error surfaces wrapped (BackendCompilerFailed)
            if MSG in str(e):
                print(f"rank {rank}: reproduced: {MSG}", flush=True)
                return 1
            raise
        print(f"rank {rank}: compiled DDP step ran: fixed", flush=True)
        return 0
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
