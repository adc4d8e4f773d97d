"""The arithmetic a job trains in and a model is encoded in: fp32, bf16 or fp16, chosen from
the request (`precision=auto|fp32|bf16`) and the hardware; the choice itself is pure."""

from __future__ import annotations

import functools
from collections.abc import Collection
from pathlib import Path

import torch

from sbert_exp.errors import ConfigError

# CPU flags (Linux's /proc/cpuinfo) of bf16 arithmetic in hardware: AVX-512 BF16 and AMX on
# x86, the BF16 extension on Arm.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


# The flags a speed figure depends on: bf16 and int8 arithmetic (x86, then Arm).
SPEED_FLAGS = ("avx512_bf16", "amx_bf16", "avx512_vnni", "amx_int8", "bf16", "i8mm")


@functools.cache
def _cpuinfo() -> str:
    """/proc/cpuinfo, read once a process: the CPU does not change under it."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them; none where /proc/cpuinfo is missing."""
    return parse_cpu_flags(_cpuinfo())


def describe_cpu(text: str | None = None) -> str:
    """The CPU's name and the flags its bf16 and int8 speed depend on, e.g. `AMD EPYC
    (avx512_bf16 avx512_vnni)`: what a speed figure names (`text`: /proc/cpuinfo's)."""
    import platform

    text = _cpuinfo() if text is None else text
    names = [line.partition(":")[2].strip() for line in text.splitlines()
             if line.partition(":")[0].strip() == "model name"]
    flags = parse_cpu_flags(text)
    found = " ".join(f for f in SPEED_FLAGS if f in flags) or "no bf16 or int8 flags"
    return f"{(names[0] if names else '') or platform.processor() or platform.machine()} ({found})"


def parse_cpu_flags(text: str) -> frozenset[str]:
    """The first processor's flags in /proc/cpuinfo's `text` (`flags`, or `Features` on Arm)."""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def bf16_flags(flags: Collection[str]) -> list[str]:
    """Those of the CPU's `flags` that mean bf16 arithmetic in hardware."""
    return [f for f in CPU_BF16_FLAGS if f in flags]


def choose_precision(requested: str, device: str, flags: Collection[str],
                     cuda_bf16: bool) -> str:
    """fp32, bf16 or fp16: `requested` (auto, fp32, bf16) on `device`, given the CPU's `flags`
    and whether the GPU does bf16. auto: bf16 where the hardware has it; else fp16 on a GPU
    (with loss scaling in training) and fp32 on a CPU. bf16 asked of a CPU without it runs,
    emulated and slower than fp32 (`bf16_emulated` says so); of a GPU without it, it cannot."""
    on_cuda = device.startswith("cuda")
    if requested == "fp32":
        return "fp32"
    if requested == "bf16":
        if on_cuda and not cuda_bf16:
            raise ConfigError(f"precision=bf16 but {device} has no bf16 arithmetic: use "
                              "precision=auto (fp16 on this GPU) or precision=fp32")
        return "bf16"
    if on_cuda:
        return "bf16" if cuda_bf16 else "fp16"
    return "bf16" if bf16_flags(flags) else "fp32"


def bf16_emulated(device: str, flags: Collection[str]) -> bool:
    """True on a CPU without bf16 arithmetic: bf16 there is converted from and to fp32."""
    return not device.startswith("cuda") and not bf16_flags(flags)


def precision(device: str, requested: str = "auto") -> str:
    """`choose_precision` on this machine's hardware."""
    on_cuda = device.startswith("cuda")
    return choose_precision(requested, device, cpu_flags(),
                            on_cuda and torch.cuda.is_bf16_supported())


def describe_precision(device: str, requested: str, chosen: str) -> str:
    """One line for the log: what was chosen, from what, and a warning when bf16 is emulated."""
    flags = cpu_flags()
    found = " ".join(bf16_flags(flags)) or "none"
    line = (f"precision {chosen} (precision={requested} on {device}"
            + (")" if device.startswith("cuda") else f"; CPU bf16 flags: {found})"))
    if chosen == "bf16" and bf16_emulated(device, flags):
        line += ": emulated here, slower than fp32 (precision=fp32 or auto avoids it)"
    return line


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def in_precision(model, chosen: str):
    """`model` to encode in `chosen`: itself for fp32, else a copy with its weights in that
    dtype (what the bf16 form's folder holds; on the CPU it encodes faster than autocast on
    fp32 weights, and scores the same: docs/benchmarks.md)."""
    if chosen == "fp32":
        return model
    import copy

    return copy.deepcopy(model).to(DTYPES[chosen])
