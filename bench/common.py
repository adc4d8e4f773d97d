"""Shared by the benchmarks: composed configs, the STSb test sentences, the machine, a results
file. Building, scoring and timing a form is the package's (`sbert_exp.forms`)."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("SBERT_EXP_BENCH_OUT", ROOT / "bench" / "results"))
# Overrides every composed config gets last (a JSON list): tests/test_bench.py points them at a
# tiny model to run each benchmark's quickest path; the figures are then not the ones to report.
EXTRA: list[str] = json.loads(os.environ.get("SBERT_EXP_BENCH_OVERRIDES", "[]"))


def compose(overrides: Sequence[str]):
    """The typed TrainConfig that `python -m sbert_exp.train OVERRIDES` would run."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from sbert_exp.train import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return OmegaConf.to_object(hydra_compose(config_name="train",
                                                 overrides=[*overrides, *EXTRA]))


def sts_test_sentences(prefix: str) -> list[str]:
    """Every distinct sentence of the STSb test split, prefixed as the model expects."""
    from sbert_exp.data.inputs import distinct_sentences, load_data

    return [prefix + s for s in distinct_sentences(load_data(compose(["phase=none"])).sts_test)]


def machine() -> str:
    """The machine a figure was measured on: the CPU with its bf16 and int8 flags, cores,
    torch threads, GPU."""
    from sbert_exp.model.precision import describe_cpu

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{describe_cpu()}, {platform.machine()}, {os.cpu_count()} CPU cores, torch "
            f"{torch.__version__} with {torch.get_num_threads()} threads, {device}")


def write(name: str, text: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.md"
    path.write_text(text)
    return path


def publish(name: str, lines: Sequence[str]) -> Path:
    """A benchmark's table: printed, and written to bench/results/NAME.md (named on stderr)."""
    text = "\n".join(lines) + "\n"
    print(text)
    path = write(name, text)
    print(f"wrote {path}", file=sys.stderr)
    return path
