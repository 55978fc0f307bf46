"""The fast path on a real accelerator against the reference path on CPU (skipped without one).

CPU-only CI runs the accelerator code path on CPU tensors instead
(``opt._fast.accelerator_path``, in test_properties.py); this file checks the real device when one
is present.
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import make_model, named_groups, rel_diff, train

from lamb_variants import PRESETS, create

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_cuda_fast_path_equals_cpu_reference(preset):
    lr = 1.0 if preset == "lars" else 1e-2
    model = make_model()
    cpu = train(
        lambda m: create(preset, named_groups(m), lr=lr, impl="reference"), copy.deepcopy(model), 20
    )
    cuda = train(lambda m: create(preset, named_groups(m), lr=lr), copy.deepcopy(model).cuda(), 20)
    assert rel_diff(cpu, cuda.cpu()) <= 1e-10


def test_cuda_step_keeps_stats_on_device():
    model = make_model(dtype=torch.float32).cuda()
    opt = create("nvlamb", named_groups(model), lr=1e-3)
    model(torch.randn(4, 8, device="cuda")).sum().backward()
    opt.step()
    assert opt.stats.grad_norm.device.type == "cuda"
    assert opt.stats.trust_ratios.device.type == "cuda"
