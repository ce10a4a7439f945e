"""User Triton kernels on a machine without a GPU: the kernels' launches routed through Triton's interpreter.

A user kernel decorated normally (``@triton.jit``, a ``JITFunction``) is what Dynamo captures: it becomes the
``triton_kernel_wrapper_mutation`` HOP, functionalized by AOTAutograd into ``triton_kernel_wrapper_functional`` and
partitioned with the region's policy like any op.  Three things stop that on CPU, and :func:`interpreted_launches`
stands in for each, for the duration of a cell only (every patch is undone on exit; nothing is set in the
environment, so a cell that does not ask for it sees stock torch and triton):

* Dynamo treats a ``JITFunction`` as a kernel only where ``torch.utils._triton.has_triton()`` holds
  (torch/_dynamo/variables/builder.py ``_wrap``), which needs a GPU or a Triton CPU backend; without it Dynamo inlines
  the launcher and stops at a pybind builtin.  ``has_triton`` answers True.
* Which tensors the kernel writes is read off its TTIR (torch/_higher_order_ops/triton_kernel_wrap.py
  ``identify_accessed_tensors`` -> ``generate_ttir``), which asks ``triton.runtime.driver.active`` for the current
  target; with no driver it falls back to "every input is mutated" (and logs a warning).  A stand-in driver answers
  :data:`TRACE_TARGET`, an sm_90 CUDA target: the TTIR, hence the access analysis, is the one a GPU of that
  architecture gets.
* The launch itself (``JITFunction.run``: eager code's ``kernel[grid](...)`` and the HOP's dense implementation that
  compiled graphs call, ``triton_kernel_wrapper_mutation_dense``) compiles for the active driver's GPU.  It runs the
  same kernel through ``triton.runtime.interpreter.InterpretedFunction`` instead, on host memory.

Why not ``TRITON_INTERPRET=1``: ``@triton.jit`` then returns an ``InterpretedFunction``, which torch 2.13 does not
trace (``torch/_library/triton.py`` ``wrap_triton`` returns it unwrapped, and Dynamo's builder only knows
``JITFunction``/``Autotuner``; by design: an interpreted kernel lacks the JIT metadata the traceable wrapper needs,
pytorch/pytorch#185597), and the variable is read once, at decoration.

What is real in such a cell: the kernel's capture, its access analysis, the tags and the partitioning of the region,
and its numerics (the interpreter computes the kernel's result with numpy).  What is not: the GPU launch path (grid
to blocks, the driver, the compiled binary) and inductor, which cannot codegen a user kernel for CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
from unittest import mock

# The target the TTIR of a captured kernel is generated for while tracing (an H100's): what identify_accessed_tensors
# reads.  TTIR is generated before any target-specific lowering.
TRACE_TARGET = ("cuda", 90, 32)  # backend, arch, warp size


@dataclasses.dataclass
class Launches:
    """The kernels launched through the interpreter while the context was open, by name, in order."""

    names: list[str] = dataclasses.field(default_factory=list)


class _TraceDriver:
    """A stand-in for ``triton.runtime.driver.active`` that knows only the target to generate TTIR for."""

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget

        return GPUTarget(*TRACE_TARGET)


_OPEN: list[Launches] = []  # the open contexts, innermost last: a launch is counted by each


@contextlib.contextmanager
def interpreted_launches():
    """Launches of ``@triton.jit`` kernels run by Triton's interpreter, and Dynamo captures them, while open (see the
    module docstring); yields the :class:`Launches` made meanwhile.  Nests: an inner context counts its own launches,
    the outer ones count them too."""
    import torch.utils._triton as torch_triton
    from triton.runtime import driver
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    def run(self, *args, grid, warmup, **kwargs):
        for launches in _OPEN:
            launches.names.append(self.fn.__name__)
        return InterpretedFunction(self.fn).run(*args, grid=grid, warmup=warmup, **kwargs)

    launches = Launches()
    active = driver._active  # None until something asks for a driver: restored as it was
    with mock.patch.object(torch_triton, "has_triton", lambda: True), mock.patch.object(JITFunction, "run", run):
        driver.set_active(_TraceDriver())
        _OPEN.append(launches)
        try:
            yield launches
        finally:
            _OPEN.remove(launches)
            driver._active = active
