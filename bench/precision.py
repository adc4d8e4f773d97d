"""fp32 against bf16: encoding at keep 12, 6 and 2, and a distillation stage, side by side.

    python bench/precision.py [--rounds 3] [--sentences N] [--train-sentences 640]

One process loads e5_small and encodes the STSb test sentences with each kept-layer view (the
middle strategy's layers) in fp32 and in bf16 (a copy of the weights in bf16, as the bf16 form
holds them), alternating within each round; the best round counts. Each view and precision
is also scored on STSb test. Then a keep-6 student (embeddings frozen) runs the job's own
distillation stage on the same sentences and targets in fp32 and in bf16 (autocast, fp32
weights and optimizer state), alternating.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

from common import compose, machine, publish, sts_test_sentences

BASE = "e5_small"
KEEPS = (12, 6, 2)
ENCODE_TARGET = 1.7  # bf16 over fp32, keep 12 and keep 6, on a CPU with bf16 arithmetic
SCORE_TOLERANCE = 0.001  # bf16 STSb within this of fp32: the 95% interval of the paired difference
TRAIN_SENTENCES = 640  # the distillation stage's sentences: 10 steps of 64


def encode_rows(model, cfg, sentences: list[str], rounds: int, batch_size: int) -> list[dict]:
    from sbert_exp import forms
    from sbert_exp.data.inputs import load_data
    from sbert_exp.evaluation import intervals
    from sbert_exp.model import modeling
    from sbert_exp.pruning.rules import kept_layers

    depth = modeling.num_layers(model)
    keeps = sorted({min(k, depth) for k in KEEPS}, reverse=True)
    kept = {k: kept_layers(depth, k, "middle") for k in keeps}
    views = {f"{k}/{p}": kept[k] for k in keeps for p in ("fp32", "bf16")}
    precisions = {name: name.split("/")[1] for name in views}
    seconds = forms.time_views(model, views, sentences, batch_size, rounds,
                               precisions=precisions)
    pairs = load_data(cfg).sts_test
    rows = []
    for k in keeps:
        found = {p: forms.view_evaluated(model, kept[k], pairs, batch_size, p)
                 for p in ("fp32", "bf16")}
        scores = {p: scores[forms.STS_SPEARMAN] for p, (scores, _) in found.items()}
        rows.append({"keep": k, "layers": kept[k], "fp32_s": seconds[f"{k}/fp32"],
                     "bf16_s": seconds[f"{k}/bf16"], "fp32_sts": scores["fp32"],
                     "bf16_sts": scores["bf16"],
                     "difference": intervals.paired(found["bf16"][1], found["fp32"][1]),
                     "speedup": seconds[f"{k}/fp32"] / seconds[f"{k}/bf16"]})
    return rows


def train_row(model, sentences: list[str], rounds: int) -> dict:
    """The job's distillation stage on a keep-6 student, fp32 against bf16."""
    from sbert_exp import forms
    from sbert_exp.config.schema import DistillConfig
    from sbert_exp.model import modeling
    from sbert_exp.pruning.rules import kept_layers
    from sbert_exp.training.stages import train_distill

    targets = model.encode(sentences, batch_size=64, convert_to_numpy=True)
    depth = modeling.num_layers(model)
    keep = min(6, depth)
    students = {}
    for p in ("fp32", "bf16"):
        students[p] = copy.deepcopy(model)
        forms.shape(students[p], kept_layers(depth, keep, "middle"), None)
        modeling.freeze_embeddings(students[p])
    stage = DistillConfig(max_sentences=None, batch_size=64)
    results = {}

    def run(p: str):
        def go() -> None:
            results[p] = train_distill(students[p], sentences, targets, stage, seed=0,
                                       precision=p)
        return go

    seconds = forms.best_of(rounds, {p: run(p) for p in students})
    return {"keep": keep, "n": len(sentences), "steps": -(-len(sentences) // 64),
            "fp32_s": seconds["fp32"], "bf16_s": seconds["bf16"],
            "speedup": seconds["fp32"] / seconds["bf16"],
            "fp32_loss": results["fp32"].loss, "bf16_loss": results["bf16"].loss}


def main(argv: list[str] | None = None) -> int:
    from sbert_exp.model import modeling
    from sbert_exp.model.precision import precision

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=None, help="at most N sentences")
    parser.add_argument("--train-sentences", type=int, default=TRAIN_SENTENCES)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    cfg = compose([f"base_model={BASE}", "pruning=unpruned", "phase=none"])
    model = modeling.load_base(cfg.base_model, "cpu", modeling.locate(cfg.base_model))
    sentences = sts_test_sentences("")[: args.sentences]  # encode adds the model's prompt
    rows = encode_rows(model, cfg, sentences, args.rounds, args.batch_size)
    train = train_row(model, sts_test_sentences("")[: args.train_sentences], args.rounds)
    hardware = precision("cpu", "auto") == "bf16"
    lines = [
        "## fp32 against bf16",
        "",
        f"`python bench/precision.py --rounds {args.rounds}"
        + (f" --sentences {args.sentences}" if args.sentences else "")
        + (f" --train-sentences {args.train_sentences}" if args.train_sentences != TRAIN_SENTENCES
           else "") + "`: "
        f"{cfg.base_model.name}, {len(sentences):,} distinct STSb test sentences, batch "
        f"{args.batch_size}, the middle strategy's layers, best of {args.rounds} alternating "
        f"rounds after a warm-up; {machine()}. "
        + ("This CPU has bf16 arithmetic: `precision=auto` picks bf16." if hardware else
           "This CPU has no bf16 arithmetic: `precision=auto` picks fp32, and bf16 here is "
           "emulated (the targets apply only where the hardware has it)."),
        "",
        "| keep | kept layers | fp32 s | bf16 s | bf16 speedup | target | STSb fp32 | STSb bf16 "
        "| difference [95%] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    failed = []
    for r in rows:
        verdict = "-"
        if hardware and r["keep"] >= 6:
            d = r["difference"]  # met: its whole 95% interval within the tolerance
            ok = (r["speedup"] >= ENCODE_TARGET
                  and -SCORE_TOLERANCE <= d.low and d.high <= SCORE_TOLERANCE)
            verdict = (f">= {ENCODE_TARGET}x, STSb within {SCORE_TOLERANCE}: "
                       f"{'met' if ok else 'MISSED'}")
            failed += [] if ok else [f"keep {r['keep']}"]
        lines.append(
            f"| {r['keep']} | {' '.join(map(str, r['layers']))} | {r['fp32_s']:.2f} "
            f"| {r['bf16_s']:.2f} | **{r['speedup']:.2f}x** | {verdict} | {r['fp32_sts']:.4f} "
            f"| {r['bf16_sts']:.4f} | {r['difference'].words()} |")
    lines += [
        "",
        f"Distillation stage (the job's own: sentence-transformers' trainer, MSE to the "
        f"unpruned model's embeddings), keep {train['keep']}, embeddings frozen, "
        f"{train['n']:,} sentences in {train['steps']} steps of 64, AdamW: fp32 "
        f"{train['fp32_s']:.2f} s, bf16 {train['bf16_s']:.2f} s, **{train['speedup']:.2f}x** "
        f"(final loss {train['fp32_loss']:.5f} fp32, {train['bf16_loss']:.5f} bf16).",
        "", f"Took {time.perf_counter() - started:.0f} s."]
    publish("precision", lines)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
