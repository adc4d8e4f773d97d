"""How one job's wall time and peak memory grow with kept layers and pairs per stage, and
what freezing the embeddings saves.

    python bench/scaling.py [--quick]

Each job is a separate `python -m sbert_exp.train` process on e5_small (top layers removed,
NLI then STS, batch 16), evaluated once at the end (eval.every_stage=false, no speed timing,
no NLI test, model not saved), in fp32 (bench/precision.py compares bf16); peak memory is the
process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from common import OUT, ROOT, machine, publish


def run_job(overrides: list[str], folder) -> dict:
    command = [sys.executable, "-m", "sbert_exp.train", *overrides, "eval.every_stage=false",
               "eval.speed_rounds=0", "dataset.nli_test=null", "save_model=false", "force=true",
               "precision=fp32",
               f"tracking.uri=sqlite:///{OUT / 'scaling' / 'mlflow.db'}",
               "tracking.experiment=scaling", f"hydra.run.dir={folder}"]
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{stderr[-3000:]}")
    metrics = json.loads((folder / "metrics.json").read_text())
    return {"wall": wall, "peak_mb": usage.ru_maxrss / 1024, "metrics": metrics}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small budgets, to try the harness")
    args = parser.parse_args(argv)
    keeps, sizes = ([2, 6], [64, 128]) if args.quick else ([2, 6, 12], [256, 512])
    cases = [(k, n, False) for n in sizes for k in keeps] + [(k, sizes[-1], True) for k in keeps]
    started, rows = time.perf_counter(), []
    for i, (keep, pairs, freeze) in enumerate(cases):
        result = run_job([f"pruning.keep={keep}", f"phase.nli.max_pairs={pairs}",
                          f"phase.sts.max_pairs={pairs}", f"phase.freeze_embeddings={freeze}"],
                         OUT / "scaling" / f"job{i}")
        m = result["metrics"]
        rows.append({"keep": keep, "pairs": pairs, "freeze": freeze, **result,
                     "train_s": m["train_nli/seconds"] + m["train_sts/seconds"],
                     "pairs_per_s": 2 * pairs / (m["train_nli/seconds"] + m["train_sts/seconds"]),
                     "sts": m["sts_test/spearman_cosine"],
                     "trainable": m["model/params_trainable"]})
        print(f"job {i + 1}/{len(cases)}: keep {keep}, {pairs} pairs, freeze {freeze}: "
              f"{result['wall']:.0f} s", file=sys.stderr, flush=True)
    lines = [
        "## Job wall time and peak memory by kept layers, pairs per stage, frozen embeddings",
        "",
        f"`python bench/scaling.py{' --quick' if args.quick else ''}`: e5_small, top layers "
        f"removed, NLI then STS with the same number of pairs, batch 16, one STSb test "
        f"evaluation at the end, model not saved; one process per job; {machine()}.",
        "",
        "| kept layers | pairs per stage | frozen embeddings | trainable params (M) | job wall s "
        "| training s | training pairs/s | peak memory (MiB) | STSb Spearman |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['keep']} | {r['pairs']} | {'yes' if r['freeze'] else 'no'} "
                     f"| {r['trainable'] / 1e6:.1f} | {r['wall']:.1f} | {r['train_s']:.1f} "
                     f"| {r['pairs_per_s']:.1f} | {r['peak_mb']:,.0f} | {r['sts']:.4f} |")
    by = {(r["keep"], r["pairs"], r["freeze"]): r for r in rows}
    n = sizes[-1]
    lines += ["", "Frozen against trained embeddings, same job:", ""]
    for k in keeps:
        a, b = by[(k, n, False)], by[(k, n, True)]
        lines.append(f"- keep {k}, {n} pairs: training {a['train_s'] / b['train_s']:.2f}x "
                     f"faster, job {a['wall'] / b['wall']:.2f}x faster, peak memory "
                     f"{b['peak_mb'] / a['peak_mb']:.2f}x, STSb {a['sts']:.4f} -> {b['sts']:.4f}")
    if not args.quick:
        # The default sweep trains keep 2 and 6 under three strategies and keep 12 once.
        estimate = sum(by[(k, 512, False)]["wall"] * (1 if k == 12 else 3) for k in keeps)
        lines += ["", f"The default sweep trains 7 distinct jobs (keep 2 and 6 under three "
                  f"strategies, keep 12 once): {estimate / 60:.1f} min as lean jobs of 512 pairs "
                  f"per stage, before the default job's extra evaluations (docs/results.md "
                  f"has a measured run)."]
    lines += ["", f"Took {time.perf_counter() - started:.0f} s."]
    publish("scaling", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
