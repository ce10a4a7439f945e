"""Area "errors": the documented error messages of activation checkpointing under torch.compile, each checked for
its exception type and message (CATALOGUE.md items 31, 34, 50-53, 55, 68, 69).

Errors raised while compiling or running a compiled program go through the standard runner with
``raises=(type, regex)``.  Errors raised in eager code (argument validation, misuse outside a compile or tracing
context) run on ``Runner.EAGER``: the program's eager call, nothing compiled; the raised exception is then checked the
same way.  Error cells have no goldens: nothing is recorded when the documented error is raised."""

from __future__ import annotations

import torch

from torch._dynamo.exc import BackendCompilerFailed

from harness.core.case import (STANDARD_BACKENDS, AxesSpec, Backend, BuildContext, Case, Checkpoint, CompileSpec, Decompositions, Expect,
                               Partitioner, Program, Requires, Runner)

ERROR_CELL = AxesSpec(partitioners=Partitioner.MIN_CUT, backends=Backend.AOT_EAGER)  # the error does not depend on them
# Newer than the torch 2.11 some machines run: looked up at call time, and its cases declare the API they need.
BUDGET_API = "torch.autograd.graph.region_activation_memory_budget"
NEEDS_BUDGET = Requires.api(BUDGET_API, "region activation memory budgets (torch 2.13 has them)")
NEEDS_NON_STRICT = tuple(Requires.api(f"torch.compiler.{patch}",
                                      "the autograd patches of non-strict tracing (torch 2.13 has them)")
                         for patch in ("_patch_autograd_grad", "_patch_engine_backward"))


def region_activation_memory_budget(budget):
    return torch.autograd.graph.region_activation_memory_budget(budget)


# --- 31: a context_fn whose pair is not two TorchDispatchModes ------------------------------------------------------

class _InvalidContext:
    """A do-nothing context manager: a valid context for eager checkpointing, but not a TorchDispatchMode."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _invalid_context_gen():
    return _InvalidContext(), _InvalidContext()


def invalid_context(ctx: BuildContext) -> Program:
    def body(x, y):
        return torch.sigmoid(torch.matmul(x, y)) * y

    def fn(x, y):
        return ctx.checkpoint(body, x, y, use_reentrant=False, context_fn=_invalid_context_gen)

    return Program(fn, (ctx.randn(4, 4), ctx.randn(4, 4)))


# --- 34: a user graph break inside a checkpointed module under fullgraph ----------------------------------------------

class _SinBreakCos(torch.nn.Module):
    def forward(self, x):
        x = torch.sin(x)
        torch._dynamo.graph_break()
        return torch.cos(x)


def user_graph_break(ctx: BuildContext) -> Program:
    mod = _SinBreakCos()

    def fn(x):
        return ctx.checkpoint(mod, x, use_reentrant=True)

    return Program(fn, (ctx.randn(4, 4, requires_grad=False),))


# --- 50, 51: region_activation_memory_budget misuse in eager ----------------------------------------------------------

def eager_budget(value):
    """Builder: a program that enters ``region_activation_memory_budget(value)`` in eager (expected to raise)."""

    def enter():
        with region_activation_memory_budget(value):
            pass

    return lambda ctx: Program(enter, ())


# --- 52, 53, 55: budgets the partitioner rejects -----------------------------------------------------------------------

def conflicting_budgets(ctx: BuildContext) -> Program:
    def fn(x, y, a):
        with region_activation_memory_budget(0.3):
            b1 = torch.relu(torch.mm(x, y) + 1)
        with region_activation_memory_budget(0.8):
            b2 = torch.relu(torch.mm(a, y) + 1)
        return b1, b2

    return Program(fn, (ctx.randn(8, 8), ctx.randn(8, 8), ctx.randn(8, 8)))


def partial_budget(ctx: BuildContext) -> Program:
    def fn(x, y):
        with region_activation_memory_budget(0.3):
            a = torch.relu(torch.mm(x, y) + 1)
        return torch.relu(a * 2)

    return Program(fn, (ctx.randn(8, 8), ctx.randn(8, 8)))


def budgets_per_invoke_subgraph(ctx: BuildContext) -> Program:
    wa, wb = ctx.randn(8, 8), ctx.randn(8, 8)

    @torch.compiler.nested_compile_region
    def region_a(x, w):
        with region_activation_memory_budget(0.3):
            return torch.relu(x @ w)

    @torch.compiler.nested_compile_region
    def region_b(x, w):
        with region_activation_memory_budget(0.8):
            return torch.relu(x @ w)

    def fn(x, wa, wb):
        return region_b(region_a(x, wa), wb).sum()

    return Program(fn, (ctx.randn(8, 8), wa, wb))


# --- 68, 69: the autograd patches of non-strict tracing used without its context --------------------------------------

def patched_grad_outside_non_strict(ctx: BuildContext) -> Program:
    def fn(x):
        with torch.compiler._patch_autograd_grad():
            torch.autograd.grad(torch.sin(x).sum(), x)

    return Program(fn, (ctx.randn(4),))


def patched_backward_outside_non_strict(ctx: BuildContext) -> Program:
    def fn(x):
        with torch.compiler._patch_engine_backward():
            torch.sin(x).sum().backward()

    return Program(fn, (ctx.randn(4),))


def eager_error_case(name: str, build, catalogue: tuple[int, ...], raises, requires) -> Case:
    return Case(name, build, catalogue=catalogue, checkpoint=Checkpoint.NONE, runner=Runner.EAGER,
                expect=Expect(raises=raises), compile=CompileSpec(backward=False), axes=ERROR_CELL, requires=requires)


EXPECTS_FLOAT = (TypeError, r"region_activation_memory_budget: expects a float, got ")
OUT_OF_RANGE = (ValueError, r"region_activation_memory_budget: must be in \[0, 1\], got ")
# Raised by the min-cut partitioner inside the backend, so Dynamo reports it as BackendCompilerFailed (a RuntimeError,
# as upstream asserts) carrying the partitioner's RuntimeError.
BUDGET_CONFLICT = (BackendCompilerFailed, r"RuntimeError: torch\.autograd\.graph\.region_activation_memory_budget: "
                                          r"conflicting budgets within a single joint graph \(including nested "
                                          r"subgraphs\): \[0\.3, 0\.8\]")

CASES = [
    Case("error_sac_invalid_context", invalid_context, catalogue=(31,), checkpoint=Checkpoint.SAC,
         expect=Expect(raises=(BackendCompilerFailed, r"AssertionError: In torch\.compile mode, `context_fn` arg "
                                                    r"passed to `torch\.utils\.checkpoint` must generate a tuple of two "
                                                    r"`TorchDispatchMode`s")),
         axes=AxesSpec(backends=STANDARD_BACKENDS),
         notes="upstream asserts only Exception; the AssertionError is raised while AOTAutograd traces the region, so "
               "Dynamo reports it as BackendCompilerFailed"),
    Case("error_user_graph_break_fullgraph", user_graph_break, catalogue=(34,), checkpoint=Checkpoint.REENTRANT,
         expect=Expect(raises=(torch._dynamo.exc.Unsupported, r"User-inserted graph break")),
         compile=CompileSpec(fullgraph=True, backward=False, decompositions=Decompositions.INDUCTOR), axes=ERROR_CELL),
    eager_error_case("error_budget_rejects_bool", eager_budget(True), (50,), (TypeError, EXPECTS_FLOAT[1] + "bool"),
                     requires=NEEDS_BUDGET),
    eager_error_case("error_budget_rejects_str", eager_budget("0.5"), (50,), (TypeError, EXPECTS_FLOAT[1] + "str"),
                     requires=NEEDS_BUDGET),
    eager_error_case("error_budget_rejects_above_one", eager_budget(2.0), (50,),
                     (ValueError, OUT_OF_RANGE[1] + r"2\.0"), requires=NEEDS_BUDGET),
    eager_error_case("error_budget_rejects_negative", eager_budget(-0.1), (50,),
                     (ValueError, OUT_OF_RANGE[1] + r"-0\.1"), requires=NEEDS_BUDGET),
    eager_error_case("error_budget_in_eager", eager_budget(0.5), (51,),
                     (RuntimeError, r"region_activation_memory_budget can only be used inside a torch\.compile region"),
                     requires=NEEDS_BUDGET),
    Case("error_budget_conflict", conflicting_budgets, catalogue=(52,), checkpoint=Checkpoint.NONE,
         expect=Expect(raises=BUDGET_CONFLICT),
         axes=AxesSpec(partitioners=Partitioner.MIN_CUT, backends=STANDARD_BACKENDS),
         notes="only the min-cut partitioner reads region budgets", requires=NEEDS_BUDGET),
    Case("error_budget_partial_annotation", partial_budget, catalogue=(53,), checkpoint=Checkpoint.NONE,
         expect=Expect(raises=(BackendCompilerFailed, r"RuntimeError: torch\.autograd\.graph\."
                                                    r"region_activation_memory_budget: must cover the entire forward of "
                                                    r"a graph \(including HOP bodies\), but 2 forward op\(s\) are "
                                                    r"unannotated")),
         axes=AxesSpec(partitioners=Partitioner.MIN_CUT, backends=STANDARD_BACKENDS),
         notes="the two unannotated forward ops are the mul and the relu outside the region", requires=NEEDS_BUDGET),
    Case("error_budget_distinct_per_invoke_subgraph", budgets_per_invoke_subgraph, catalogue=(55,),
         checkpoint=Checkpoint.NONE, expect=Expect(raises=BUDGET_CONFLICT),
         axes=AxesSpec(partitioners=Partitioner.MIN_CUT, backends=STANDARD_BACKENDS),
         compile=CompileSpec(config={"dynamo": {"inline_single_use_invoke_subgraph": False}}), requires=NEEDS_BUDGET),
    eager_error_case("error_patch_autograd_grad_outside_non_strict", patched_grad_outside_non_strict, (68,),
                     (AssertionError, r"_patch_autograd_grad\(\) must be used under _non_strict_tracing_context\(\)"),
                     requires=NEEDS_NON_STRICT),
    eager_error_case("error_patch_engine_backward_outside_non_strict", patched_backward_outside_non_strict, (69,),
                     (AssertionError, r"_patch_engine_backward\(\) must be used under _non_strict_tracing_context\(\)"),
                     requires=NEEDS_NON_STRICT),
]
