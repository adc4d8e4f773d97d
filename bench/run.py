"""`make bench`: run every benchmark, one process each, and gather their tables in one file.

    python bench/run.py [--quick]

Each benchmark measures its ratios side by side within its own run and writes
bench/results/NAME.md; this script joins them into bench/results/bench.md. --quick runs
fewer rounds and sentences, to try the harness (its figures are not the ones to report).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from common import OUT, machine

HERE = Path(__file__).resolve().parent
BENCHMARKS = {  # script -> (arguments, arguments with --quick)
    "encode_speed.py": ([], ["--rounds", "1", "--sentences", "300"]),
    "export_speed.py": ([], ["--rounds", "1", "--sentences", "300"]),
    "overhead.py": ([], ["--rounds", "1"]),
    "scaling.py": ([], ["--quick"]),
    "peers.py": ([], ["--rounds", "1", "--sentences", "300", "--latency", "30"]),
    "onnx_fp32.py": ([], ["--rounds", "1", "--sentences", "128"]),
    "precision.py": ([], ["--rounds", "1", "--sentences", "300", "--train-sentences", "128"]),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    started, sections, failed = time.perf_counter(), [], []
    for script, (full, quick) in BENCHMARKS.items():
        command = [sys.executable, str(HERE / script), *(quick if args.quick else full)]
        print(f"$ {' '.join(command[1:])}", file=sys.stderr, flush=True)
        proc = subprocess.run(command, stdout=subprocess.PIPE, text=True)
        sections.append(proc.stdout.strip())
        if proc.returncode != 0:
            failed.append(script)
    text = "\n\n".join([
        "# sbert_exp benchmarks", "",
        f"{time.strftime('%Y-%m-%d')}, {machine()}; {time.perf_counter() - started:.0f} s in all.",
        *sections]) + "\n"
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench.md").write_text(text)
    print(text)
    print(f"wrote {OUT / 'bench.md'}" + (f"; missed a target: {', '.join(failed)}"
                                         if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
