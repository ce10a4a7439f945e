"""`nn.Module.compile()` on a built-in torch.nn module (here nn.Linear) compiles nothing in torch 2.13.

`module.compile()` installs `torch.compile(self._call_impl)`; both `Module._call_impl` and `Linear.forward` live in
Dynamo's skip files, so no frame is captured and the backend is never called, silently.  `torch.compile(module)` does
compile the same module.  Upstream: pytorch/pytorch#150915 (fix: pytorch/pytorch#185722).
It matters for CATALOGUE item 62 ("every child submodule is compiled in place with .compile()"): the Linear children
of the block run eagerly, so only the custom RMSNorm children are compiled under the eager checkpoint.

Run: python findings/module_compile_skips_builtin_modules.py   (torch 2.13.0, CPU). Exits 1 while the bug is present.
"""

import torch
import torch._dynamo.testing

counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
lin = torch.nn.Linear(4, 4, bias=False)
lin.compile(backend=counter)
lin(torch.randn(2, 4, requires_grad=True))
via_method = counter.frame_count

torch._dynamo.reset()
counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
torch.compile(torch.nn.Linear(4, 4, bias=False), backend=counter)(torch.randn(2, 4, requires_grad=True))
via_function = counter.frame_count

print(f"frames compiled: nn.Linear.compile() = {via_method}, torch.compile(nn.Linear) = {via_function}")
raise SystemExit(0 if via_method == via_function == 1 else 1)
