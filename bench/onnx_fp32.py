"""Why fp32 ONNX is no faster than eager torch: the exporter, ONNX Runtime's settings and its
transformer optimizer, side by side.

    python bench/onnx_fp32.py [--rounds 3] [--sentences 768]

One process prunes e5_small to the layers `angular` keeps at keep 6 and trims its vocabulary
(as bench/export_speed.py does), saves it, and runs the encoder as each variant inside the same
sentence-transformers pipeline: eager torch fp32 (the reference), the graph of torch's
TorchScript exporter (what `export=onnx` writes) in ONNX Runtime with its default settings and
with other thread and memory settings, the graph exported with eager attention (which
onnxruntime's transformer optimizer can fuse into Attention operators), each of those through
`onnxruntime.transformers.optimizer.optimize_model`, and the int8 graph `export=onnx_int8`
writes. STSb test Spearman on every pair, encode time of the first N distinct STSb test
sentences, batch 64, best of alternating rounds; ratios to eager torch fp32.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import compose, machine, publish

LAYERS = [0, 1, 2, 3, 10, 11]  # as bench/export_speed.py
REFERENCE = "torch fp32 (eager)"


def _session(file: Path, **settings):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    for key, value in settings.items():
        if key.startswith("config:"):
            options.add_session_config_entry(key.removeprefix("config:"), value)
        else:
            setattr(options, key, value)
    return ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])


def _optimized(source: Path, config, notes: dict) -> Path | None:
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(source), model_type="bert",
                               num_heads=config.num_attention_heads,
                               hidden_size=config.hidden_size, opt_level=0)
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    notes[source.parent.name] = ", ".join(f"{v} {k}" for k, v in sorted(fused.items()))
    target = source.with_name("optimized.onnx")
    optimized.save_model_to_file(str(target))
    return target


def bench(folder: Path, rounds: int, limit: int) -> dict:
    import onnxruntime as ort

    from sbert_exp import forms
    from sbert_exp.data.inputs import distinct_sentences, load_data
    from sbert_exp.forms import export
    from sbert_exp.job.checks import plan
    from sbert_exp.model import modeling

    cfg = compose(["base_model=e5_small", "phase=none", "vocab=corpus", "export=none",
                   f"pruning.layers=[{','.join(map(str, LAYERS))}]"])
    data = load_data(cfg)
    model = forms.load_unpruned(cfg.base_model, modeling.locate(cfg.base_model))
    forms.shape(model, plan(cfg), forms.Trim(data.vocab_corpus, cfg.vocab.min_count,
                                             cfg.vocab.single_chars))
    forms.save(model, folder / "model")

    def exported(attention: str | None) -> Path:
        m = export.load(folder / "model")
        if attention:
            modeling.hf_model(m).set_attn_implementation(attention)
        target = folder / (attention or "default") / "model.onnx"
        export.export_onnx(m, target)
        return target

    def served(file: Path, **settings):
        m = export.load(folder / "model")
        export.run_with_onnxruntime(m, file, torch.get_num_threads())
        if settings:
            m[0].model.session = _session(file, **settings)
        return m

    config = modeling.hf_model(model).config
    default, eager, notes = exported(None), exported("eager"), {}
    int8 = folder / "default" / "int8.onnx"
    export.quantize_onnx(default, int8)
    variants = {
        REFERENCE: export.load(folder / "model"),
        "onnx (TorchScript export, ONNX Runtime defaults)": served(default),
        "onnx, no memory pattern": served(default, enable_mem_pattern=False),
        "onnx, threads do not spin": served(
            default, **{"config:session.intra_op.allow_spinning": "0"}),
        "onnx, sequential, 1 inter-op thread": served(
            default, inter_op_num_threads=1, execution_mode=ort.ExecutionMode.ORT_SEQUENTIAL),
        "onnx, optimizer (bert)": served(_optimized(default, config, notes)),
        "onnx, eager attention export": served(eager),
        "onnx, eager attention export, optimizer (bert)": served(
            _optimized(eager, config, notes)),
        "onnx_int8 (what export=onnx_int8 writes)": served(int8),
    }
    sentences = distinct_sentences(data.sts_test)[:limit]
    spearman = {name: forms.scores(m, data.sts_test)["sts_test/spearman_cosine"]
                for name, m in variants.items()}
    seconds = forms.best_encode_seconds(variants, sentences, 64, rounds)
    return {"spearman": spearman, "seconds": seconds, "fused": notes, "n": len(sentences),
            "ort": ort.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=768)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="onnx_fp32-") as tmp:
        r = bench(Path(tmp), args.rounds, args.sentences)
    base = r["seconds"][REFERENCE]
    lines = [
        "## fp32 ONNX against eager torch: exporter, settings, optimizer",
        "",
        f"`python bench/onnx_fp32.py --rounds {args.rounds} --sentences {args.sentences}`: "
        f"e5_small keeping layers {' '.join(map(str, LAYERS))}, vocabulary trimmed, untrained; "
        f"{r['n']} distinct STSb test sentences, batch 64, best of {args.rounds} alternating "
        f"rounds; ONNX Runtime {r['ort']}; {machine()}.",
        "",
        "| variant | STSb test Spearman | encode s | speed vs eager torch fp32 |",
        "|---|---|---|---|",
    ]
    for name, s in r["seconds"].items():
        lines.append(f"| {name} | {r['spearman'][name]:.4f} | {s:.2f} | **{base / s:.2f}x** |")
    fused = "; ".join(f"{k} export: {v}" for k, v in r["fused"].items())
    lines += ["", f"The optimizer fused: {fused}.", "",
              f"Took {time.perf_counter() - started:.0f} s."]
    publish("onnx_fp32", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
