"""Encode speedup of pruned vs unpruned models, and where the time outside the layers goes.

    python bench/encode_speed.py [--rounds 3] [--sentences N]

For each base model, one process encodes the STSb test sentences with every layer, with the kept
layers of each pruned variant, and with no layer at all (tokenizer, embeddings, pooling: the cost
that pruning cannot remove), alternating the variants within each round; the best round counts.
"""

from __future__ import annotations

import argparse
import sys
import time

from common import compose, machine, publish, sts_test_sentences

CASES = [  # base model, [(keep, strategy)]: the pruned variants timed against the whole model
    ("e5_small", [(6, "top"), (2, "top")]),
    ("minilm_l6", [(2, "top")]),
]
TARGETS = {("e5_small", 6): 1.8, ("e5_small", 2): 4.0}


def bench_model(name: str, variants: list[tuple[int, str]], rounds: int, limit: int | None,
                batch_size: int) -> list[dict]:
    from sbert_exp.forms import time_views
    from sbert_exp.model import modeling
    from sbert_exp.pruning.rules import kept_layers

    cfg = compose([f"base_model={name}", "pruning=unpruned"])
    model = modeling.load_base(cfg.base_model, "cuda" if modeling.torch.cuda.is_available()
                               else "cpu", modeling.locate(cfg.base_model))
    sentences = sts_test_sentences("")[:limit]  # encode adds the prefix: the model's prompt
    prompted = [(modeling.default_prompt(model) or "") + s for s in sentences]
    depth = modeling.num_layers(model)

    def tokenize() -> None:
        for i in range(0, len(sentences), batch_size):
            model.preprocess(prompted[i:i + batch_size])

    kept = {k: kept_layers(depth, k, strategy) for k, strategy in variants}
    views = {"full": list(range(depth)), "none": [],
             **{f"keep{k}": layers for k, layers in kept.items()}}
    seconds = time_views(model, views, sentences, batch_size, rounds, {"tokenize": tokenize})
    per_layer = (seconds["full"] - seconds["none"]) / depth
    rows = []
    for k, layers in kept.items():
        speedup = seconds["full"] / seconds[f"keep{k}"]
        rows.append({
            "base": name, "keep": k, "depth": depth, "layers": layers, "n": len(sentences),
            "full_s": seconds["full"], "pruned_s": seconds[f"keep{k}"], "speedup": speedup,
            "layers_only": depth / k,
            "model_limit": seconds["full"] / (seconds["none"] + k * per_layer),
            "fixed_s": seconds["none"], "tokenize_s": seconds["tokenize"],
            "fixed_share": seconds["none"] / seconds[f"keep{k}"],
            "target": TARGETS.get((name, k)),
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=None, help="at most N sentences")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = [row for name, variants in CASES
            for row in bench_model(name, variants, args.rounds, args.sentences, args.batch_size)]
    lines = [
        "## Encode speedup, pruned vs unpruned",
        "",
        f"`python bench/encode_speed.py --rounds {args.rounds}"
        + (f" --sentences {args.sentences}" if args.sentences else "") + "`: "
        f"{rows[0]['n']:,} distinct STSb test sentences (e5 with its `query: ` prefix), batch "
        f"{args.batch_size}, best of {args.rounds} alternating rounds after a warm-up; "
        f"{machine()}.",
        "",
        "| base | keep | kept layers | unpruned s | pruned s | speedup | target | layer-only limit "
        "| limit with fixed cost | fixed cost s (tokenizer s) | fixed share of pruned |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    failed = []
    for r in rows:
        verdict = "-"
        if r["target"] is not None:
            ok = r["speedup"] >= r["target"]
            verdict = f">= {r['target']:.1f}x: {'met' if ok else 'MISSED'}"
            if not ok:
                failed.append(f"{r['base']} keep {r['keep']}")
        lines.append(
            f"| {r['base']} | {r['keep']} of {r['depth']} | {' '.join(map(str, r['layers']))} "
            f"| {r['full_s']:.2f} | {r['pruned_s']:.2f} | **{r['speedup']:.2f}x** | {verdict} "
            f"| {r['layers_only']:.1f}x | {r['model_limit']:.2f}x "
            f"| {r['fixed_s']:.2f} ({r['tokenize_s']:.2f}) | {r['fixed_share']:.0%} |")
    lines += ["", "Fixed cost: the same sentences with no layer at all (tokenizer, embeddings, "
              "pooling, batching), which pruning cannot remove. `limit with fixed cost` = "
              "unpruned / (fixed + keep x per-layer time): the speedup if layers were the only "
              "thing pruning changes.", "", f"Took {time.perf_counter() - started:.0f} s."]
    publish("encode_speed", lines)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
