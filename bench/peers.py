"""Every form a user could ship, side by side: the base as it is, quantized, trimmed, static
embeddings, another small model, and the sweep's pruned forms, against the unpruned fp32 base.

    python bench/peers.py [--rounds 3] [--sentences N] [--latency N]

One process builds (or finds, in the asset cache, where `references=[...]` runs put them) each
form of e5_small and scores it on STSb test; then it times them all on the same STSb test
sentences: throughput at batch 64 (best of alternating rounds after a warm-up) and latency at
batch 1 (median and p95 over single-sentence encodes, the forms alternating sentence by
sentence). Peak memory is each form's own: a fresh process per form loads it and encodes the
sentences at batch 64, and reports its peak RSS above that of a process that imported the same
libraries and loaded nothing. Disk: the folder the form loads from. Everything runs on the CPU;
the CPU's model and int8 instruction flags go with the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import compose, machine, publish

BASE = "e5_small"
REFERENCES = ("int8", "trimmed", "trimmed_int8", "static", "static_64", "minilm_l6")
# The sweep's forms, untrained (training changes their quality, not their speed or size): the
# layers greedy_dev keeps in e5_small (docs/results.md, "Which layers"), trimmed, exported to
# int8 ONNX.
PRUNED = {"keep 6": [0, 1, 4, 9, 10, 11], "keep 2": [0, 11]}
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16")


def cpu() -> str:
    """The CPU's model name and which int8 instruction flags it has."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "CPU unknown"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), "CPU unknown")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines()
                  if line.startswith("flags")), [])
    found = [f for f in INT8_FLAGS if f in flags]
    return f"{name}; int8 flags: {', '.join(found) or 'none of ' + ', '.join(INT8_FLAGS)}"


def _pruned(cfg, checked, name: str, layers: list[int], folder: Path) -> Path:
    """The base pruned to `layers`, its vocabulary trimmed as vocab=corpus trims, as int8 ONNX."""
    from sbert_exp import forms, references
    from sbert_exp.config.schema import ExportBackend
    from sbert_exp.data.inputs import vocab_corpus

    corpus = vocab_corpus(references.corpus_config(cfg), set(), {})
    form = forms.Form(layers=layers, trim=forms.Trim(corpus), backend=ExportBackend.onnx_int8)
    return forms.build(cfg.base_model, checked.model_path, form, folder / name.replace(" ", ""))


def build_forms(folder: Path):
    """name -> (how to load it in a fresh process, its folder), and the job's data."""
    from sbert_exp import references
    from sbert_exp.job.checks import check

    # vocab=corpus: the job reads the training splits, which the trimmed forms keep the tokens of.
    cfg = compose([f"base_model={BASE}", "phase=none", "pruning=unpruned", "vocab=corpus",
                   f"references=[{','.join(REFERENCES)}]"])
    checked = check(cfg)
    found = {"as is (fp32)": ("base", checked.model_path)}
    for ref in checked.references:
        _, model_dir, seconds = references.ensure(ref, cfg, checked)
        how = f"built in {seconds:.0f} s" if seconds else "found"
        print(f"{ref.name}: {model_dir} ({how})", file=sys.stderr, flush=True)
        kind = "peer" if ref.form == "peer" else "form"
        found[ref.name if ref.form != "peer" else f"{ref.name} as is"] = (
            kind, str(model_dir) if kind != "peer" else ref.name)
    for name, layers in PRUNED.items():
        found[f"{name}, trimmed, int8 (untrained)"] = (
            "form", str(_pruned(cfg, checked, name, layers, folder)))
    return found, cfg, checked


def load(kind: str, where: str):
    """A form for CPU encoding, from what `build_forms` says."""
    from sbert_exp import forms
    from sbert_exp.model import modeling

    if kind in ("base", "peer"):
        cfg = compose([f"base_model={BASE if kind == 'base' else where}", "phase=none"])
        return forms.load_unpruned(cfg.base_model, where if kind == "base"
                                   else modeling.locate(cfg.base_model))
    return forms.load(Path(where))


def _child(kind: str, where: str, sentences_file: str) -> None:
    """In a fresh process: load one form (nothing for kind "none"), encode, print peak RSS."""
    import resource

    # What every form's process imports, the floor's too: torch, sentence-transformers, ONNX
    # Runtime, model2vec and this package's modules.
    import model2vec  # noqa: F401
    import onnxruntime  # noqa: F401
    import sentence_transformers  # noqa: F401

    from sbert_exp import forms, references  # noqa: F401

    sentences = json.loads(Path(sentences_file).read_text())
    if kind != "none":
        model = load(kind, where)
        model.encode(sentences, batch_size=64)
    # VmHWM, the peak of this process's own memory: ru_maxrss would carry the parent's peak
    # across fork and exec on Linux.
    status = Path("/proc/self/status").read_text().splitlines()
    hwm = next((line.split()[1] for line in status if line.startswith("VmHWM:")), None)
    peak_kb = int(hwm) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_rss_mb": peak_kb / 1024}))


def peak_rss(kind: str, where: str, sentences_file: Path) -> float:
    proc = subprocess.run([sys.executable, __file__, "--child", kind, where,
                           str(sentences_file)], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"]





def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(*sys.argv[2:5])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=None,
                        help="time at most N sentences at batch 64 (default: every one)")
    parser.add_argument("--latency", type=int, default=200,
                        help="single-sentence encodes per form for the latency")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    import tempfile

    from sbert_exp import forms
    from sbert_exp.data.inputs import distinct_sentences
    from sbert_exp.evaluation import language_scores
    from sbert_exp.model import modeling

    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        tmp = Path(tmp)
        found, cfg, checked = build_forms(tmp)
        data = checked.data
        sentences = distinct_sentences(data.sts_test)[: args.sentences]
        # Each form's own peak memory first, while this process holds none of them.
        sentences_file = tmp / "sentences.json"
        sentences_file.write_text(json.dumps(sentences))
        floor = peak_rss("none", "-", sentences_file)
        rss = {name: peak_rss(kind, where, sentences_file) - floor
               for name, (kind, where) in found.items()}
        models = {name: load(kind, where) for name, (kind, where) in found.items()}
        bitext_sets = [s for s in data.languages if s.kind == "bitext"]
        sts, langs = {}, {}
        for name, model in models.items():
            sts[name] = forms.scores(model, data.sts_test)["sts_test/spearman_cosine"]
            # Retrieval between English and the base's languages; a peer has its own languages.
            peer = name.endswith(" as is") and name != "as is (fp32)"
            langs[name] = {} if peer else language_scores(model, bitext_sets, {}, 64)
        seconds = forms.best_encode_seconds(models, sentences, 64, args.rounds)
        lat = forms.latencies(models, sentences[: args.latency + 1])
        disk = {name: forms.disk_mb(Path(where)) if kind != "peer" else forms.disk_mb(
            Path(modeling.locate(compose([f"base_model={where}"]).base_model)))
            for name, (kind, where) in found.items()}
    bitext = list(langs["as is (fp32)"])
    base = "as is (fp32)"
    lines = [
        "## Peers: what a user could ship instead, side by side",
        "",
        f"`python bench/peers.py --rounds {args.rounds}`"
        + (f" `--sentences {args.sentences}`" if args.sentences else "")
        + f": {BASE} and every form a user could ship instead, on the CPU; STSb test Spearman on "
        f"all {len(data.sts_test):,} pairs; throughput on {len(sentences):,} distinct STSb test "
        f"sentences at batch 64 (best of {args.rounds} alternating rounds); latency at batch 1 "
        f"over {args.latency} sentences (median, p95); peak RSS of a fresh process that loads "
        f"the form and encodes those sentences, above one that loads nothing ({floor:.0f} MB); "
        f"{machine()}; {cpu()}.",
        "",
        "| form | STSb | " + "".join(f"{m.split('/')[1]} acc | " for m in bitext)
        + "sentences/s (batch 64) | speedup | latency ms p50 / p95 | peak RSS MB | disk MB |",
        "|---|---|" + "---|" * len(bitext) + "---|---|---|---|---|",
    ]
    for name in found:
        ms = sorted(1000 * s for s in lat[name])
        p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
        cells = [name, f"{sts[name]:.4f}",
                 *(f"{langs[name][m]:.4f}" if m in langs[name] else "-" for m in bitext),
                 f"{len(sentences) / seconds[name]:.0f}",
                 f"**{seconds[base] / seconds[name]:.2f}x**",
                 f"{statistics.median(ms):.1f} / {p95:.1f}", f"{rss[name]:.0f}",
                 f"{disk[name]:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "as is: the base model, torch fp32, the reference of every speedup. int8: the "
              "base exported to int8 ONNX (`sbert_exp.forms.export`), no pruning. trimmed: the "
              "base "
              "with its vocabulary trimmed to the training splits (`vocab=corpus`). static, "
              "static_64: token embeddings distilled from the base by model2vec (PCA 256 and 64 "
              "dimensions). minilm_l6 as is: another small English model, its own languages not "
              "scored. keep 6 / keep 2: the layers greedy_dev keeps, untrained, trimmed, int8 "
              "ONNX: their speed and size are a trained model's, their STSb is not "
              "(docs/results.md). Disk MB: the folder the form loads from (an export folder also "
              "holds the fp32 weights).", "", f"Took {time.perf_counter() - started:.0f} s."]
    publish("peers", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
