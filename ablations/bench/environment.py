"""What machine a record is from: versions, the device, its memory, its bf16 support."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import lightning
import torch
import transformers

import lamb_variants
from ablations.run.curves import numerics


def device_name(device: torch.device) -> str:
    """The CUDA device's name (``torch.cuda.get_device_name``), or ``"cpu"``."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def driver_version() -> str | None:
    """The NVIDIA driver's version: from ``/proc/driver/nvidia/version`` (Linux), else
    ``nvidia-smi``; None where neither answers. (torch reports the CUDA runtime it was built
    with, not the driver.)"""
    try:
        found = re.search(
            r"Kernel Module\s+([\d.]+)", Path("/proc/driver/nvidia/version").read_text()
        )
        if found:
            return found.group(1)
    except OSError:
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, the device (name, memory, compute capability, bf16 support) and the numerics
    record every run writes (:func:`ablations.run.curves.numerics`)."""
    out: dict[str, Any] = {
        "device": device_name(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "lightning": lightning.__version__,
        "transformers": transformers.__version__,
        "lamb_variants": lamb_variants.__version__,
        "host": platform.node(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update(
            driver=driver_version(),
            memory_gib=props.total_memory / 2**30,
            capability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
            bf16=torch.cuda.is_bf16_supported(),
            cudnn=torch.backends.cudnn.version(),
        )
    else:
        # CPU autocast computes bf16 on any CPU; natively where the vector unit has it
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        out.update(
            driver=None,
            memory_gib=pages / 2**30,
            bf16=True,
            cpu_capability=torch.backends.cpu.get_cpu_capability(),
        )
    out["numerics"] = numerics()
    return out
