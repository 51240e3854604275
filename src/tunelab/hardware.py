"""What the machine can train on, detected once: GPUs, bf16 support, CPU cores.

The launcher plans runs from a ``Hardware`` description (tests give explicit ones: 0 GPUs, 1, 8; bf16
yes or no), and ``mixed_precision: auto`` resolves through ``resolve_precision`` everywhere: in the
planner, in the recipe's accelerator and in the app's estimate.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

PRECISIONS = ("no", "fp16", "bf16")


@dataclass(frozen=True)
class Hardware:
    """The devices of one machine (or of one node of a cluster)."""

    gpus: int = 0
    gpu_bf16: bool = False  # every GPU runs bf16 (Ampere and newer)
    cpu_bf16: bool = False  # the CPU runs bf16 matmuls natively (AVX-512 BF16 / AMX)
    cpus: int = 1
    gpu_name: str = ""

    def describe(self) -> str:
        if self.gpus:
            return f"{self.gpus} x {self.gpu_name or 'GPU'}" + (", bf16" if self.gpu_bf16 else "")
        return f"CPU ({self.cpus} cores{', bf16' if self.cpu_bf16 else ''})"


def cpu_has_fast_bf16() -> bool:
    """True where the CPU runs bf16 matmuls natively: there bf16 is several times faster than fp32."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.cache
def detect_hardware() -> Hardware:
    """This machine's hardware (imports torch; cached: it does not change while a process runs)."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return Hardware(
        gpus=gpus,
        gpu_bf16=bool(gpus) and torch.cuda.is_bf16_supported(),
        cpu_bf16=cpu_has_fast_bf16(),
        cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
        gpu_name=torch.cuda.get_device_name(0) if gpus else "",
    )


def resolve_precision(requested: str, hardware: Hardware, on_gpu: bool) -> str:
    """'auto' is bf16 where the device runs it natively, fp16 on older GPUs, fp32 ("no") on other CPUs."""
    if requested != "auto":
        return requested
    if on_gpu:
        return "bf16" if hardware.gpu_bf16 else "fp16"
    return "bf16" if hardware.cpu_bf16 else "no"
