"""AOTAutogradCache reuses a partition made with another activation_memory_budget_solver / runtime estimator.

torch 2.13.0 (CPU, inductor; needs a C++ compiler).  No matching upstream issue found (searched pytorch issues for
AOTAutogradCache + activation_memory_budget_solver); the behaviour comes from pytorch#171601 ("cache-friendly custom
estimator/solver support"), whose table says "None or string -> Normal caching".

`torch/_functorch/config.py` lists ``activation_memory_budget_runtime_estimator`` and
``activation_memory_budget_solver`` in ``_save_config_ignore`` (callables are not serializable), so
``AOTAutogradCacheDetails.autograd_config = config.save_config()`` does not contain them, and
``_get_custom_estimator_solver_uuids`` returns ``(None, None)`` for the built-in *string* values ("dp", "greedy",
"ilp", "dp_knapsack_sliding_hirschberg", "dynamic_memory_budget_dp"; "flops", "testing", "profile").  Two compiles that
differ only in the solver or the estimator get the same cache key: the second one is an AOTAutogradCache hit and runs
the first one's forward/backward partition, although its own solver chooses a different set of saved activations.

This script (1) shows, without any cache (aot_eager-style recording backend), that "dp" and
"dynamic_memory_budget_dp" save different activations for this MLP at budget 0.3; (2) compiles it with inductor under
"dp" (cache miss), then under "dynamic_memory_budget_dp" in the same process and cache directory: a cache hit.

Run: python findings/autograd_cache_ignores_budget_solver.py   Exits 1 while the bug is present, 0 once fixed.
"""

import os
import tempfile

os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="ac_cache_solver_")

import torch  # noqa: E402
from torch._dynamo.backends.common import aot_autograd  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402
from torch._functorch.partitioners import min_cut_rematerialization_partition  # noqa: E402


def make():
    torch.manual_seed(0)
    layers = [torch.nn.Linear(256, 256) for _ in range(4)]
    model = torch.nn.Sequential(*[m for lin in layers for m in (lin, torch.nn.GELU())])
    return model, torch.randn(64, 256, requires_grad=True)


def saved_count(solver):
    graphs = {}

    def keep(kind):
        def compiler(gm, _):
            graphs[kind] = gm
            return gm.forward
        return compiler

    torch._dynamo.reset()
    model, x = make()
    backend = aot_autograd(fw_compiler=keep("fw"), bw_compiler=keep("bw"),
                           partition_fn=min_cut_rematerialization_partition)
    with torch._functorch.config.patch(activation_memory_budget=0.3, activation_memory_budget_solver=solver,
                                       enable_autograd_cache=False):
        torch.compile(model, backend=backend)(x).sum().backward()
    return sorted(n.name for n in graphs["bw"].graph.nodes if n.op == "placeholder" and not n.name.startswith("tangents"))


def inductor(solver):
    torch._dynamo.reset()
    counters.clear()
    model, x = make()
    with torch._functorch.config.patch(activation_memory_budget=0.3, activation_memory_budget_solver=solver):
        torch.compile(model, backend="inductor")(x).sum().backward()
    return dict(counters["aot_autograd"])


if __name__ == "__main__":
    print("torch", torch.__version__)
    a, b = saved_count("dp"), saved_count("dynamic_memory_budget_dp")
    print(f"no cache: dp saves {a}\n          dynamic_memory_budget_dp saves {b}")
    if a == b:
        print("the two solvers agree on this graph: the repro needs a graph where they differ")
        raise SystemExit(2)
    first, second = inductor("dp"), inductor("dynamic_memory_budget_dp")
    print(f"inductor, solver dp: {first}\ninductor, solver dynamic_memory_budget_dp: {second}")
    if second.get("autograd_cache_hit", 0):
        print("BUG: the dynamic_memory_budget_dp compile was an AOTAutogradCache hit on the dp entry: it runs dp's "
              "partition (the solver is not part of the cache key)")
        raise SystemExit(1)
    print("fixed: changing the solver misses the cache")
