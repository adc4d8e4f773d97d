"""Framework overhead: one job through `python -m sbert_exp.train` vs bare sentence-transformers.

    python bench/overhead.py [--rounds 3] [--keep 6]

Both commands get the same model (e5_small pruned to the bottom `keep` layers), the same pairs
(512 SNLI + 384 STSb training pairs, the default job's seeded subsets, written to JSONL files
both read), the same steps, batch size, seed and arithmetic (fp32), and evaluate once on the
STSb test set and save the model. sbert_exp runs with eval.every_stage=false
eval.speed_rounds=0 eval.languages=[] precision=fp32 so that it does the same work (the base's
Hindi and Marathi sets, which the default job also scores, are not in the bare script); it
still logs everything to MLflow. The commands alternate; a first round warms
the caches (and creates the MLflow store) and is not counted; the best of `rounds` counts.
Then one default job (every evaluation and the speed timing on) shows what those cost.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import OUT, ROOT, compose, machine, publish

LABELS = {0: "entailment", 1: "neutral", 2: "contradiction"}
LEAN = ("eval.", "precision=")  # the overrides that make the job do what the bare script does


def write_data(folder: Path) -> dict[str, Path]:
    """The default job's NLI and STS training subsets and the STSb test set, as JSONL."""
    from sbert_exp.data.inputs import load_data

    data = load_data(compose(["dataset.nli_test=null"]))
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, split, label in (("nli", data.nli_train, "label"), ("sts", data.sts_train, "score"),
                               ("test", data.sts_test, "score")):
        files[name] = folder / f"{name}.jsonl"
        with open(files[name], "w", encoding="utf-8") as f:
            for row in split:
                value = LABELS[row[label]] if label == "label" else row[label] * 5.0
                f.write(json.dumps({"sentence1": row["sentence1"], "sentence2": row["sentence2"],
                                    label: value}, ensure_ascii=False) + "\n")
    return files


def timed(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=int, default=6, help="kept layers (6: the default job)")
    args = parser.parse_args(argv)
    from sbert_exp.data import assets

    work = OUT / "overhead"
    files = write_data(work / "data")
    cfg = compose(["base_model=e5_small"])
    model_dir = assets.resolve(cfg.base_model.location)
    keep = ",".join(map(str, range(args.keep)))
    common = [f"pruning.keep={args.keep}", "pruning.strategy=top", "force=true",
              f"tracking.uri=sqlite:///{work / 'mlflow.db'}", "tracking.experiment=overhead"]
    data = ["dataset=local_files", f"dataset.nli_train.location={files['nli']}",
            f"dataset.sts_train.location={files['sts']}",
            f"dataset.sts_test.location={files['test']}",
            "phase.nli.max_pairs=null", "phase.sts.max_pairs=null"]
    ours = [sys.executable, "-m", "sbert_exp.train", *common, *data, "eval.every_stage=false",
            "eval.speed_rounds=0", "eval.languages=[]", "precision=fp32",
            f"hydra.run.dir={work / 'ours'}"]
    bare = [sys.executable, "bench/bare_sbert.py", "--model", str(model_dir), "--keep", keep,
            "--prefix", cfg.base_model.prefix, "--nli", str(files["nli"]), "--sts",
            str(files["sts"]), "--test", str(files["test"]), "--out", str(work / "bare_model")]
    full = [sys.executable, "-m", "sbert_exp.train", *common, f"hydra.run.dir={work / 'full'}"]

    seconds: dict[str, list[float]] = {"ours": [], "bare": []}
    spearman = {}
    for round_ in range(args.rounds + 1):
        for name, command in (("ours", ours), ("bare", bare)):
            s, out = timed(command)
            if round_:  # round 0 warms up
                seconds[name].append(s)
            if name == "bare":
                spearman["bare"] = json.loads(out.strip().splitlines()[-1])["spearman_cosine"]
    metrics = json.loads((work / "ours" / "metrics.json").read_text())
    spearman["ours"] = metrics["sts_test/spearman_cosine"]
    full_s, _ = timed(full)
    full_metrics = json.loads((work / "full" / "metrics.json").read_text())

    extra = sum(1 for k in full_metrics
                if k.startswith(("before/", "after_nli/", "nli_test/", "speed/")))
    ours_s, bare_s = min(seconds["ours"]), min(seconds["bare"])
    ratio = ours_s / bare_s
    lines = [
        "## Framework overhead, sbert_exp vs bare sentence-transformers",
        "",
        f"`python bench/overhead.py --rounds {args.rounds} --keep {args.keep}`: e5_small keeping "
        f"layers {keep}, 512 NLI + 384 STS pairs, batch 16, one STSb test evaluation, model "
        f"saved; wall time of each command (process start, imports, loading, training, "
        f"evaluation, saving), best of {args.rounds} alternating rounds after a warm-up; "
        f"{machine()}.",
        "",
        "| command | wall s (rounds) | STSb Spearman |",
        "|---|---|---|",
        f"| `{' '.join(ours[1:4])} ... {' '.join(o for o in ours if o.startswith(LEAN))}` "
        f"| {ours_s:.1f} ({', '.join(f'{s:.1f}' for s in seconds['ours'])}) "
        f"| {spearman['ours']:.6f} |",
        f"| `bench/bare_sbert.py ...` | {bare_s:.1f} "
        f"({', '.join(f'{s:.1f}' for s in seconds['bare'])}) | {spearman['bare']:.6f} |",
        "",
        f"**Overhead: {ratio:.3f}x** (target <= 1.05x: {'met' if ratio <= 1.05 else 'MISSED'}). "
        f"The same Spearman on both sides shows the same training happened.",
        "",
        f"The default job on the same data (STSb before training and after each stage, NLI "
        f"accuracy on 1,000 test pairs, the Hindi and Marathi sets, speed timing, the "
        f"precision `auto` picks here) took {full_s:.1f} s: "
        f"{full_s / ours_s:.2f}x the lean job, for {extra} more metrics.",
    ]
    publish("overhead", lines)
    return 0 if ratio <= 1.05 else 1


if __name__ == "__main__":
    sys.exit(main())
