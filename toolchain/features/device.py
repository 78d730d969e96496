"""Where and in what precision the backbone runs during extraction, and what that does to the
cache key.

The CPU in float32 is the reference (``COMPUTE``, the key every existing cache has). A GPU runs
the same float32 graph with other kernels (other reduction orders), so its features differ at
rounding level: it gets its own key, so that one cache never mixes chunks of two devices and
stays bit-consistent across shards. fp16/bf16 autocast changes the numbers for real (about 1e-3
relative) and is offered on the GPU only, where it is a speed-up. The device index is not in the
key: ``cuda:0`` and ``cuda:1`` run the same kernels.
"""

from __future__ import annotations

import re

from ..errors import ConfigError
from .backbone import COMPUTE

DTYPES = ("float32", "float16", "bfloat16")
DEVICE_PATTERN = r"cpu|cuda(:\d{1,2})?"


def check_device(device: str) -> str:
    if not isinstance(device, str) or not re.fullmatch(DEVICE_PATTERN, device):
        raise ConfigError(f"device {device!r} is not one of cpu, cuda, cuda:N (N = 0..99); pass e.g. --device cpu")
    return device


def check_dtype(device: str, dtype: str) -> str:
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}; pass e.g. --dtype float32")
    if dtype != "float32" and not device.startswith("cuda"):
        raise ConfigError(f"--dtype {dtype} is autocast on a GPU only; pass --device cuda, or --dtype float32 on the CPU")
    return dtype


def compute_mode(device: str = "cpu", dtype: str = "float32") -> str:
    """The cache key's compute field: what changes the numbers (device type and dtype)."""
    check_dtype(check_device(device), dtype)
    kind = device.split(":")[0]
    if kind == "cpu":
        return COMPUTE
    return f"{kind}/float32" if dtype == "float32" else f"{kind}/autocast-{dtype}"


def torch_device(device: str):
    """The torch device, or one line saying that there is no such device here."""
    import torch

    check_device(device)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: no CUDA device is available here (torch "
                              f"{torch.__version__}); use --device cpu, or install a CUDA build of torch")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA "
                              f"device(s), 0..{torch.cuda.device_count() - 1}; pass one of them")
    return torch.device(device)


def autocast_dtype(dtype: str):
    """The torch dtype to autocast to, or None for plain float32."""
    import torch

    return None if dtype == "float32" else getattr(torch, dtype)
