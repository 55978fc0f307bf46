"""The fast path on a real CUDA device (skipped without one).

- every preset and every knob value (test_properties.py's table) on CUDA equals the float64
  reference path on the CPU, parameters and statistics;
- the statistics stay on the device;
- ``step()`` never waits on the host (``torch.cuda.set_sync_debug_mode("error")`` turns every
  synchronizing CUDA call into an error), after the first step (which plans the blocks and copies
  their indices to the device once);
- ``impl="compiled"`` fuses CPU chunks only: on CUDA it is the fast path, bit for bit.

CPU-only CI runs the accelerator code path on CPU tensors instead
(``opt._fast.accelerator_path``, in test_properties.py); this file checks the real device when one
is present, and ``python -m ablations gpu-check`` runs it first on a GPU machine.
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from helpers import batches, make_model, named_groups, rel_diff, stats_rows, train
from test_properties import MIXED_ROWS, PRESET_ROWS, _knob_rows

from lamb_variants import create

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DEVICE = "cuda"
#: float64 on both sides: the device's kernels against the reference path, to rounding only.
REL = 1e-10
STATS = ("grad_norm", "moments_grad_norm", "weight_norms", "update_norms", "trust_ratios")

#: test_properties.py's table: every preset, every knob value on top of NVLAMB, the mixed rows.
ROWS = PRESET_ROWS + _knob_rows() + MIXED_ROWS


def _lr(preset: str) -> float:
    return 1.0 if preset == "lars" else 1e-2  # LARS adapts every tensor: a larger step


@pytest.mark.parametrize(("preset", "overrides"), ROWS)
def test_cuda_fast_path_equals_cpu_reference(preset, overrides):
    def make(impl):
        return lambda m: create(preset, named_groups(m), lr=_lr(preset), impl=impl, **overrides)

    model = make_model()
    cpu_stats, cuda_stats = [], []
    cpu = train(make("reference"), copy.deepcopy(model), 20, callback=stats_rows(cpu_stats))
    cuda = train(make("fast"), copy.deepcopy(model).to(DEVICE), 20, callback=stats_rows(cuda_stats))
    assert torch.isfinite(cpu).all()
    assert rel_diff(cpu, cuda.cpu()) <= REL
    for want, got in zip(cpu_stats, cuda_stats, strict=True):
        assert got["trust_ratios"].device.type == DEVICE
        for name in ("grad_norm", "weight_norms", "update_norms", "trust_ratios"):
            torch.testing.assert_close(got[name].cpu(), want[name], rtol=REL, atol=0, msg=name)


def test_cuda_step_keeps_stats_on_device():
    model = make_model(dtype=torch.float32).to(DEVICE)
    opt = create("nvlamb", named_groups(model), lr=1e-3)
    model(torch.randn(4, 8, device=DEVICE)).sum().backward()
    opt.step()
    for name in STATS:
        assert getattr(opt.stats, name).device.type == DEVICE, name
    direction = opt.direction_stats()
    assert direction.eps_dominated.device.type == DEVICE
    assert direction.sqrt_v_over_eps.device.type == DEVICE


@contextlib.contextmanager
def synchronizing_is_an_error():
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(before)


def test_sync_debug_mode_catches_a_host_read():
    """The check below cannot pass vacuously: reading a device value is an error in the mode."""
    x = torch.ones(3, device=DEVICE)
    with synchronizing_is_an_error(), pytest.raises(RuntimeError, match="synchroniz"):
        x.sum().item()


@pytest.mark.parametrize(("preset", "overrides"), ROWS)
def test_cuda_step_does_not_sync_with_the_host(preset, overrides):
    model = make_model(dtype=torch.float32).to(DEVICE)
    opt = create(preset, named_groups(model), lr=_lr(preset), **overrides)
    for t, (x, y, scale) in enumerate(batches(3, torch.float32)):
        opt.zero_grad(set_to_none=True)
        loss = scale * torch.nn.functional.mse_loss(model(x.to(DEVICE)), y.to(DEVICE))
        loss.backward()
        if t == 0:  # plans the blocks: their index tensors go to the device once
            opt.step()
            continue
        with synchronizing_is_an_error():
            opt.step()
    torch.cuda.synchronize()
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_compiled_is_the_fast_path(dtype):
    """``impl="compiled"`` fuses CPU chunks (``compiled.covers``); on CUDA every block is a whole
    group on the fast path, so it runs the fast path's kernels: the same bits."""

    def make(impl):
        return lambda m: create("nvlamb", named_groups(m), lr=1e-2, impl=impl)

    model = make_model(dtype=dtype)
    fast = train(make("fast"), copy.deepcopy(model).to(DEVICE), 20)
    compiled = train(make("compiled"), copy.deepcopy(model).to(DEVICE), 20)
    assert torch.equal(fast, compiled)
    if dtype == torch.float64:
        assert rel_diff(train(make("reference"), copy.deepcopy(model), 20), compiled.cpu()) <= REL
