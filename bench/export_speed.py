"""Serving speed and STSb of e5_small keep 6, trimmed and exported, vs the unpruned fp32 model.

    python bench/export_speed.py [--rounds 3] [--sentences N]

One process loads e5_small, prunes it to the layers `angular` keeps at keep 6, trims its
vocabulary as `vocab=corpus` does (no fine-tuning), saves it to a temporary folder and exports
that as each backend (`sbert_exp.forms`); then it scores every variant on the STSb test pairs
and times them all, with the unpruned fp32 model, on the same STSb test sentences, alternating
the variants within each round; the best round counts. Everything runs on the CPU, where ONNX
Runtime and torch's int8 kernels run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import compose, machine, publish

from sbert_exp.config.schema import ExportBackend

BASE = "e5_small"
# What pruning.strategy=angular keeps in e5_small at keep 6 (docs/results.md, "Which layers"), given
# explicitly so that no layer scoring runs here.
LAYERS = [0, 1, 2, 3, 10, 11]
# Every export backend the config accepts: a new one is benchmarked with no change here.
BACKENDS = tuple(b.value for b in ExportBackend if b is not ExportBackend.none)
UNPRUNED, PRUNED = "unpruned fp32", "pruned+trimmed fp32"
# The project's targets for e5_small keep 6 exported as int8 ONNX: speedup vs the unpruned fp32
# model, and STSb Spearman within this of the pruned fp32 model it was exported from: the whole
# 95% interval of the paired difference (sbert_exp.evaluation.intervals).
TARGET_SPEEDUP, TARGET_STSB = 3.5, 0.01
TARGET_BACKEND = "onnx_int8"


def bench(rounds: int, limit: int | None, batch_size: int, folder: Path) -> dict:
    from sbert_exp import forms
    from sbert_exp.data.inputs import distinct_sentences, load_data
    from sbert_exp.evaluation import intervals
    from sbert_exp.forms import export
    from sbert_exp.job.checks import plan
    from sbert_exp.model import modeling

    cfg = compose([f"base_model={BASE}", "phase=none", "vocab=corpus", "export=none",
                   f"pruning.layers=[{','.join(map(str, LAYERS))}]"])
    kept = plan(cfg)  # the job's own checks; explicit layers are kept as given
    path = modeling.locate(cfg.base_model)
    data = load_data(cfg)  # STSb test pairs, and the vocabulary corpus (`vocab_corpus`)
    # Those of common.sts_test_sentences, from the split read just above: encode adds the
    # prefix (the model's prompt).
    sentences = distinct_sentences(data.sts_test)[:limit]

    # The unpruned reference, and the pruned, trimmed model saved as a job saves it.
    unpruned = forms.load_unpruned(cfg.base_model, path)
    forms.save(unpruned, folder / "unpruned")
    model = forms.load_unpruned(cfg.base_model, path)
    trimmed = forms.shape(model, kept, forms.Trim(data.vocab_corpus, cfg.vocab.min_count,
                                                  cfg.vocab.single_chars))
    forms.save(model, folder / "model")
    del model

    models = {UNPRUNED: unpruned, PRUNED: forms.load(folder / "model")}
    disk = {UNPRUNED: forms.disk_mb(folder / "unpruned"),
            PRUNED: forms.disk_mb(folder / "model")}
    skipped, export_s = {}, {}
    for backend in BACKENDS:
        reason = export.available(backend)
        if reason is not None:
            skipped[backend] = reason
            continue
        started = time.perf_counter()
        out = forms.export_saved(folder / "model", backend)
        export_s[backend] = time.perf_counter() - started
        models[backend] = forms.load(out)
        disk[backend] = forms.disk_mb(out)

    scored = {name: forms.evaluated(m, data.sts_test, batch_size=batch_size)
              for name, m in models.items()}
    spearman = {name: found[forms.STS_SPEARMAN] for name, (found, _) in scored.items()}
    # Each variant's difference from the pruned fp32 model on the same pairs, paired.
    versus = {name: intervals.paired(samples[forms.STS_SPEARMAN],
                                     scored[PRUNED][1][forms.STS_SPEARMAN])
              for name, (_, samples) in scored.items()}
    seconds = forms.best_encode_seconds(models, sentences, batch_size, rounds)
    return {"kept": kept, "trim": trimmed, "n": len(sentences), "pairs": len(data.sts_test),
            "spearman": spearman, "versus": versus, "seconds": seconds, "disk": disk,
            "skipped": skipped,
            "export_s": export_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=None,
                        help="time at most N sentences (STSb is scored on every test pair)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="export_speed-") as tmp:
        r = bench(args.rounds, args.sentences, args.batch_size, Path(tmp))
    t = r["trim"]
    lines = [
        "## Exported for serving: speed and STSb vs the unpruned fp32 model",
        "",
        f"`python bench/export_speed.py --rounds {args.rounds}"
        + (f" --sentences {args.sentences}" if args.sentences else "") + "`: "
        f"{BASE} keeping layers {' '.join(map(str, r['kept']))} (what `angular` keeps at keep "
        f"6), vocabulary trimmed as `vocab=corpus` does ({t.old_vocab_size:,} -> "
        f"{t.new_vocab_size:,} rows), no fine-tuning; STSb test Spearman on all "
        f"{r['pairs']:,} pairs; encode time of {r['n']:,} distinct STSb test sentences (with the "
        f"`query: ` prompt), batch {args.batch_size}, on the CPU, best of {args.rounds} "
        f"alternating rounds after a warm-up; {machine()}.",
        "",
        "| variant | STSb test Spearman | vs pruned fp32 [95%] | encode s "
        "| speedup vs unpruned fp32 | disk MB |",
        "|---|---|---|---|---|---|",
    ]
    failed = []
    base_s = r["seconds"][UNPRUNED]
    for name in (UNPRUNED, PRUNED, *BACKENDS):
        label = f"`{name}`" if name in BACKENDS else name
        if name in r["skipped"]:
            if name == TARGET_BACKEND:
                failed.append(f"{name} not measured")
            lines.append(f"| {label} | skipped: {r['skipped'][name]} | - | - | - | - |")
            continue
        rho, s, diff = r["spearman"][name], r["seconds"][name], r["versus"][name]
        speedup = base_s / s
        diff_cell, speed_cell = diff.words(), f"**{speedup:.2f}x**"
        if name == TARGET_BACKEND:
            # Met when the whole 95% interval of the difference lies within the tolerance.
            speed_ok = speedup >= TARGET_SPEEDUP
            rho_ok = -TARGET_STSB <= diff.low and diff.high <= TARGET_STSB
            speed_cell += f" (>= {TARGET_SPEEDUP:.1f}x: {'met' if speed_ok else 'MISSED'})"
            diff_cell += f" (95% interval within {TARGET_STSB}: {'met' if rho_ok else 'MISSED'})"
            if not speed_ok:
                failed.append(f"{name} speedup")
            if not rho_ok:
                failed.append(f"{name} STSb")
        lines.append(f"| {label} | {rho:.4f} | {diff_cell} | {s:.2f} | {speed_cell} "
                     f"| {r['disk'][name]:.1f} |")
    exported = ", ".join(f"{b} {s:.0f} s" for b, s in r["export_s"].items())
    lines += ["", f"Unpruned fp32: {BASE} as it is (all 12 layers, the whole vocabulary), torch "
              "fp32, the reference of every speedup. Every variant is loaded in this one process "
              "and timed on the same sentences in alternating rounds, so the speedups are "
              "measured side by side. Disk MB: the folder the variant loads from (the export "
              "folders also hold the fp32 weights that `sbert_exp.forms.export.load` reads). "
              "Export "
              f"took {exported or 'nothing: no backend available'}.",
              "", f"Took {time.perf_counter() - started:.0f} s."]
    publish("export_speed", lines)
    if failed:
        print(f"missed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
