"""What a CUDA graph cannot capture, detected on CPU (helper of tests/test_capture.py).

`CaptureGuard(generator)` around one training step raises `NotCapturable` at the first thing that
would break a capture or be frozen by it:

- host syncs: an aten op that reads a device value on the host or whose output shape depends on
  device values (`SYNC_OPS`, boolean-mask indexing), and `.item()`/`.tolist()`/`bool(tensor)`/
  `float(tensor)`/`.cpu()`/`.numpy()` called from Python;
- random numbers from a generator that is neither the run's (`generator`) nor the device's default
  one (a replay advances only those two);
- host-to-device copies: while the guard is on, Python factory calls without a `device` make
  tensors on the meta device (standing in for "the host" of a CUDA run), so `torch.zeros(()).to(x.device)`
  or `torch.tensor(values, device=...)` shows up as a copy between devices or a tensor from host data.

Known CPU-only syncs are allowed by name, with the reason (`CPU_ONLY_SYNCS`). `copies_only=True`
checks the host-to-device copies alone: for the warm-up steps, where syncs are legal but a copy
would mean a cache that only works because warm-up filled it before the capture."""

from __future__ import annotations

import traceback
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


class NotCapturable(AssertionError):
    pass


SYNC_OPS = {
    aten._local_scalar_dense: "reads a device value on the host (.item(), bool(), float(), int())",
    aten.is_nonzero: "reads a device value on the host (bool(tensor))",
    aten.equal: "returns a Python bool computed on the device",
    aten.nonzero: "output shape depends on device values (nonzero / argwhere / where(cond))",
    aten.masked_select: "output shape depends on device values",
    aten._unique: "output shape depends on device values",
    aten._unique2: "output shape depends on device values",
    aten.unique_dim: "output shape depends on device values",
    aten.unique_consecutive: "output shape depends on device values",
    aten.unique_dim_consecutive: "output shape depends on device values",
    aten.bincount: "output size depends on the largest value",
    aten.repeat_interleave.Tensor: "output shape depends on device values",
    aten.allclose: "returns a Python bool computed on the device",
}
COPY_OPS = {aten._to_copy, aten.copy_, aten._copy_from, aten._copy_from_and_resize}
MASK_INDEX_OPS = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}

# Python-level functions that hand a device value to the host.
HOST_READS = {torch.Tensor.item: ".item()", torch.Tensor.tolist: ".tolist()", torch.Tensor.__bool__: "bool(tensor)",
              torch.Tensor.__float__: "float(tensor)", torch.Tensor.__int__: "int(tensor)",
              torch.Tensor.__index__: "a tensor used as a Python index", torch.Tensor.cpu: ".cpu()",
              torch.Tensor.numpy: ".numpy()"}

# Python factories that copy host data (lists, numbers, arrays) into a tensor. (A Python number
# assigned into a tensor, `x[i] = 1`, is a fill_ on CUDA, no copy.)
FROM_HOST_DATA = {torch.tensor, torch.as_tensor, torch.asarray, torch.from_numpy}

# Calls whose syncs happen on CPU only, allowed inside them (the reason: why CUDA does not sync).
CPU_ONLY_SYNCS = {
    torch.nn.functional.one_hot: "F.one_hot's CPU kernel checks the labels' range with .item(); "
                                 "the CUDA kernel with num_classes given does not read the device",
}


class _HostReads(TorchFunctionMode):
    def __init__(self, guard: CaptureGuard) -> None:
        super().__init__()
        self.guard = guard

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in CPU_ONLY_SYNCS:
            self.guard.allowed += 1
            try:
                return func(*args, **kwargs)
            finally:
                self.guard.allowed -= 1
        if func in HOST_READS and not (self.guard.allowed or self.guard.copies_only):
            self.guard.fail(f"{HOST_READS[func]} in the step")
        if func in FROM_HOST_DATA and not (args and isinstance(args[0], torch.Tensor)):
            self.guard.fail(f"torch.{func.__name__}(host data) in the step: a host-to-device copy")
        return func(*args, **kwargs)


class _AtenChecks(TorchDispatchMode):
    def __init__(self, guard: CaptureGuard) -> None:
        super().__init__()
        self.guard = guard

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        self.guard.check(func, args, kwargs)
        return func(*args, **kwargs)


class CaptureGuard:
    def __init__(self, generator: torch.Generator, copies_only: bool = False) -> None:
        self.generator, self.copies_only = generator, copies_only
        self.allowed = 0  # > 0 inside a CPU_ONLY_SYNCS call
        self.random_ops = 0  # random draws seen (from allowed generators)
        self._modes: list = []

    def fail(self, what: str) -> None:
        stack = "".join(traceback.format_stack(limit=12)[:-2])
        raise NotCapturable(f"not capturable: {what}\n{stack}")

    def check(self, func: Any, args: tuple, kwargs: dict) -> None:
        packet = func.overloadpacket
        if not (self.allowed or self.copies_only):
            reason = SYNC_OPS.get(func) or SYNC_OPS.get(packet)
            if reason:
                self.fail(f"aten.{packet.__name__}: {reason}")
            if func in MASK_INDEX_OPS and _has_bool_index(args):
                self.fail(f"aten.{packet.__name__} with a boolean mask: output shape depends on device values (nonzero)")
        if packet in COPY_OPS:
            devices = {t.device for t in _tensors(args, kwargs)}
            target = kwargs.get("device")
            if target is not None:
                devices.add(torch.device(target))
            if len(devices) > 1:
                self.fail(f"aten.{packet.__name__} between {sorted(map(str, devices))}: a tensor made on the host "
                          "(no device=) copied to the device")
        if torch.Tag.nondeterministic_seeded in func.tags and not self.copies_only:  # a random op
            self.random_ops += 1
            given = kwargs.get("generator", _positional(func, args, "generator"))
            if given is not None and not _same(given, self.generator) and not _same(given, torch.default_generator):
                self.fail(f"aten.{packet.__name__} draws from a generator that is neither the run's nor the "
                          "default one: a replay would not advance it")

    def __enter__(self) -> CaptureGuard:
        # Python factories without device=: "host" tensors (a context, unlike set_default_device, leaves no mode behind)
        self._modes = [torch.device("meta"), _HostReads(self), _AtenChecks(self)]
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)


def _same(a: torch.Generator, b: torch.Generator) -> bool:
    """The same generator: the dispatcher hands over another Python object for the run's, so compare states."""
    return a is b or (a.device == b.device and torch.equal(a.get_state(), b.get_state()))


def _tensors(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    flat = [*args, *kwargs.values()]
    out = []
    for a in flat:
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(x for x in a if isinstance(x, torch.Tensor))
    return out


def _has_bool_index(args: tuple) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


def _positional(func: Any, args: tuple, name: str) -> Any:
    for i, arg in enumerate(func._schema.arguments):
        if arg.name == name:
            return args[i] if i < len(args) else None
    return None
