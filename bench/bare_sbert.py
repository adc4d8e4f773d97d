"""The same job as `sbert_exp.train eval.every_stage=false eval.speed_rounds=0`, in bare
sentence-transformers: load, prune, NLI then STS fine-tuning, one STSb evaluation, save.

    python bench/bare_sbert.py --model DIR --keep 0,1 --nli NLI.jsonl --sts STS.jsonl \
        --test TEST.jsonl --out DIR [--prefix "query: "]

The reference that bench/overhead.py times sbert_exp against. It prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from datasets import Dataset
from sentence_transformers import (
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss, SoftmaxLoss
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
from transformers import set_seed

LABELS = {"entailment": 0, "neutral": 1, "contradiction": 2}


def read(path: str, prefix: str) -> list[dict]:
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    for row in rows:
        row["sentence1"], row["sentence2"] = prefix + row["sentence1"], prefix + row["sentence2"]
    return rows


def train(model, loss, rows: list[dict], columns: list[str], args) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        training_args = SentenceTransformerTrainingArguments(
            output_dir=scratch, num_train_epochs=1, per_device_train_batch_size=args.batch_size,
            learning_rate=args.lr, warmup_steps=args.warmup, seed=args.seed,
            data_seed=args.seed, report_to="none", save_strategy="no",
            dataloader_pin_memory=False, use_cpu=not torch.cuda.is_available())
        data = Dataset.from_list([{c: row[c] for c in columns} for row in rows])
        SentenceTransformerTrainer(model=model, args=training_args, train_dataset=data,
                                   loss=loss).train()


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--model", "--keep", "--nli", "--sts", "--test", "--out"):
        parser.add_argument(name, required=True)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--warmup", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-seq-length", type=int, default=128)
    args = parser.parse_args()
    started = time.perf_counter()
    set_seed(args.seed)

    # 1. Load the encoder with mean pooling.
    encoder = Transformer(args.model, max_seq_length=args.max_seq_length)
    model = SentenceTransformer(modules=[encoder, Pooling(encoder.get_embedding_dimension(),
                                                          "mean")])
    # 2. Prune: keep the listed layers.
    bert = encoder.auto_model
    keep = [int(i) for i in args.keep.split(",")]
    bert.encoder.layer = torch.nn.ModuleList([bert.encoder.layer[i] for i in keep])
    bert.config.num_hidden_layers = len(keep)
    # 3. NLI with a softmax head over (u, v, |u - v|), then 4. STS with cosine regression.
    nli = read(args.nli, args.prefix)
    for row in nli:
        row["label"] = LABELS[row["label"]]
    torch.manual_seed(args.seed)
    softmax = SoftmaxLoss(model, embedding_dimension=model.get_embedding_dimension(),
                          num_labels=3)
    train(model, softmax, nli, ["sentence1", "sentence2", "label"], args)
    sts = read(args.sts, args.prefix)
    for row in sts:
        row["score"] = row["score"] / 5.0
    train(model, CosineSimilarityLoss(model), sts, ["sentence1", "sentence2", "score"], args)
    # 5. Evaluate on STSb test, 6. save.
    test = read(args.test, args.prefix)
    evaluator = EmbeddingSimilarityEvaluator(
        [r["sentence1"] for r in test], [r["sentence2"] for r in test],
        [r["score"] / 5.0 for r in test], batch_size=64, main_similarity="cosine")
    scores = evaluator(model)
    model.save(args.out)
    spearman = next(v for k, v in scores.items() if k.endswith("spearman_cosine"))
    print(json.dumps({"spearman_cosine": spearman, "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
