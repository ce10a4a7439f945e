"""CATALOGUE item 67 (test_backward_nodes_have_seq_nr): where the traced graph records that a node is a backward node.

make_fx traces a train step through eager checkpointing under torch.compiler._non_strict_tracing_context() with
_patch_autograd_grad and preserve_node_meta.  Upstream's test reads the backward flag as
node.meta["custom"]["autograd_backward"]; torch 2.13 records it only as node.meta["autograd_backward"]
(torch/fx/traceback.py _mark_autograd_backward), so by upstream's reading no node is a backward node and the set of
backward seq_nr values is empty.  The seq_nr facts themselves hold with the flag where torch records it.  Not a torch
defect: the catalogue's reading targets a newer torch.  Run: python findings/upstream_item_67_custom_meta.py
Exits 1 while upstream's reading (meta["custom"]["autograd_backward"]) finds no backward node, 0 once it does.
"""
import sys

import torch
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.traceback import preserve_node_meta
from torch.nn.utils import stateless
from torch.utils.checkpoint import checkpoint


class SinMM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.W = torch.nn.Parameter(torch.randn(4, 4))

    def forward(self, x):
        return checkpoint(lambda x: torch.sin(x @ self.W), x, use_reentrant=False)


def main() -> int:
    torch.manual_seed(0)
    mod = SinMM()
    names = [n for n, _ in mod.named_parameters()]

    def step(*args):
        *params, x = args
        with stateless._reparametrize_module(mod, dict(zip(names, params))):
            return torch.autograd.grad(mod(x).sum(), params)

    params = [p.detach().requires_grad_() for p in mod.parameters()]
    with torch.compiler._non_strict_tracing_context(), torch.compiler._patch_autograd_grad(), preserve_node_meta():
        gm = make_fx(step)(*params, torch.randn(2, 4))
    nodes = [n for n in gm.graph.nodes if n.op == "call_function" and "seq_nr" in n.meta]

    def seq_nrs(backward_flag):
        fwd = {n.meta["seq_nr"] for n in nodes if not backward_flag(n)}
        bwd = {n.meta["seq_nr"] for n in nodes if backward_flag(n)}
        return sorted(fwd), sorted(bwd)

    upstream = seq_nrs(lambda n: (n.meta.get("custom") or {}).get("autograd_backward"))
    recorded = seq_nrs(lambda n: n.meta.get("autograd_backward"))
    print(f"torch {torch.__version__}")
    print(f"meta['custom']['autograd_backward'] (upstream's reading): forward seq_nr {upstream[0]}, backward {upstream[1]}")
    print(f"meta['autograd_backward'] (where torch records it):     forward seq_nr {recorded[0]}, backward {recorded[1]}")
    if not upstream[1]:
        print("upstream's reading finds no backward node: its seq_nr check cannot pass on this torch")
        return 1
    print("OK: upstream's reading finds the backward nodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
