"""The report's figures: STSb against kept layers and against speedup, and the Pareto front."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from sbert_exp.pruning.strategies import Strategy
from sbert_exp.report.board import AS_IS, describe, is_reference, metric_label
from sbert_exp.report.style import COLORS, FILLS_KEPT, LABELS, SCORE_AXES
from sbert_exp.report.table import LINE_STRATEGIES, STRATEGY_ORDER, references_outside

# Colour says which layers were kept, line style or fill says the init, marker the base; each
# phase has its own panel, side by side, on one STSb scale.
MARKERS = "osD^vP*X"
GREYS = ["dimgrey", "darkgrey", "black", "silver"]  # unpruned levels, one shade a base


def _panels(df: pd.DataFrame):
    """A figure with one panel per phase (sharing the STSb axis), and the phases in order."""
    from matplotlib.figure import Figure

    phases = sorted(set(df.phase))
    fig = Figure(figsize=(3.2 + 4.8 * len(phases), 4.8))
    axes = fig.subplots(1, len(phases), sharey=True, squeeze=False)
    return fig, list(zip(phases, axes[0], strict=True))


def _removed(strategy: str) -> str:
    return LABELS[strategy]


def plot(df: pd.DataFrame, out: Path) -> list[Path]:
    """STSb against kept layers (a line per strategy) and against speedup; one panel a phase.
    Drawn with matplotlib's Figure API: the caller's pyplot backend and figures are untouched."""
    paths = [out / "spearman_vs_layers.png", out / "quality_vs_speedup.png"]
    marker = {base: MARKERS[i % len(MARKERS)] for i, base in enumerate(sorted(set(df.base)))}
    fig, panels = _panels(df)
    for phase, ax in panels:
        _layers_panel(ax, df[df.phase == phase], marker)
        ax.set_xticks(sorted(set(df.keep)))
        ax.set_title(f"phase={phase}", fontsize=10)
    _finish(fig, [ax for _, ax in panels], "kept layers",
            "STSb quality vs kept layers, by pruning strategy", paths[0])

    fig, panels = _panels(df)
    for phase, ax in panels:
        _speed_panel(ax, df[df.phase == phase], marker)
        ax.set_title(f"phase={phase}", fontsize=10)
    _finish(fig, [ax for _, ax in panels], "encode speedup vs the unpruned model (x)",
            "STSb quality vs encode speed (labels: kept layers; hollow: random init)", paths[1])
    return paths


def _layers_panel(ax, in_phase: pd.DataFrame, marker: dict[str, str]) -> None:
    def reference_line(base: str, score: float, text: str, style: str) -> None:
        ax.axhline(score, color=GREYS[sorted(marker).index(base) % len(GREYS)],
                   linestyle=style, linewidth=1.2, label=text)

    for (base, init), group in in_phase.groupby(["base", "init"]):
        full = group[group.strategy == "none"]
        random = init == "random"
        for strategy in LINE_STRATEGIES:
            line = pd.concat([group[group.strategy == strategy], full]).sort_values("keep")
            if len(line[line.strategy == strategy]):
                ax.plot(line.keep, line.sts_final, "--" if random else "-",
                        marker=marker[base], color=COLORS[strategy],
                        mfc="white" if random else COLORS[strategy],
                        label=f"{base}, {init}: {_removed(strategy)}")
        chosen = group[group.strategy == "layers"]
        if len(chosen):  # explicit layers follow no strategy: points, labelled with the layers
            ax.plot(chosen.keep, chosen.sts_final, linestyle="none", marker=marker[base],
                    markersize=8, color=COLORS["layers"],
                    mfc="white" if random else COLORS["layers"],
                    label=f"{base}, {init}: chosen layers")
            for r in chosen.itertuples():
                ax.annotate(f"[{r.kept_layers}]", (r.keep, r.sts_final), fontsize=7,
                            xytext=(5, -10), textcoords="offset points")
        if len(full) and len(full) < len(group):  # the end of the lines above, as a level
            reference_line(base, full.sts_final.iloc[0], f"{base}, {init}: unpruned",
                           ":" if random else "-.")
        elif len(full):  # a model of its own depth only (a small baseline): a point
            ax.plot(full.keep, full.sts_final, linestyle="none", marker=marker[base],
                    markersize=8, color=COLORS["none"], mfc="white" if random else "black",
                    label=f"{base}, {init}: unpruned ({full.keep.iloc[0]} layers)")
    for base in references_outside(in_phase):
        reference_line(base, in_phase.unpruned_sts[in_phase.base == base].iloc[0],
                       f"{base}, pretrained: unpruned (earlier run)", "-.")
    for r in in_phase.dropna(subset=["base_sts"]).drop_duplicates("base").itertuples():
        reference_line(r.base, r.base_sts, f"{r.base}: base model, no training", (0, (1, 3)))


def _speed_panel(ax, in_phase: pd.DataFrame, marker: dict[str, str]) -> None:
    groups = in_phase.groupby(["base", "init", "strategy"])
    for base, init, strategy in sorted(groups.groups,
                                       key=lambda k: (k[0], k[1], STRATEGY_ORDER[k[2]])):
        group, random = groups.get_group((base, init, strategy)), init == "random"
        ax.scatter(group.speedup, group.sts_final, marker=marker[base], s=45,
                   edgecolors=COLORS[strategy],
                   facecolors="white" if random else COLORS[strategy],
                   label=f"{base}, {init}: {_removed(strategy)}")
        if not random:  # random-init points sit in a cluster; the legend tells them apart
            for r in group.itertuples():
                if pd.isna(r.speedup) or pd.isna(r.sts_final):
                    continue  # not timed (eval.speed_rounds=0): no point to label
                text = f"[{r.kept_layers}]" if strategy == "layers" else f"{r.keep}L"
                ax.annotate(text, (r.speedup, r.sts_final), fontsize=8,
                            xytext=(5, 3), textcoords="offset points")


def plot_pareto(df: pd.DataFrame, front: pd.Series, chosen: int, path: Path) -> Path:
    """STSb against speedup for every candidate, coloured by size; the front joined and ringed,
    the recommended model circled in red. Candidates without a speed timing are left out."""
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    drawn = df[df.speed.notna() & df.score.notna()]
    on = drawn[front[drawn.index]].sort_values("speed")
    fig = Figure(figsize=(8, 5.2))
    ax = fig.subplots()
    sized = drawn.mb.notna().any()
    colour = {"c": drawn.mb, "cmap": matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey"),
              "norm": Normalize(drawn.mb.min(), drawn.mb.max())} if sized else {"c": "tab:blue"}
    ax.scatter(drawn.speed, drawn.score, s=35, alpha=0.45, edgecolors="none", label="all models",
               **colour)
    if sized:
        colour["c"] = on.mb
        fig.colorbar(ScalarMappable(colour["norm"], colour["cmap"]), ax=ax,
                     label="size (MB on disk, or fp32 params)")
    ax.plot(on.speed, on.score, ":", color="black", linewidth=1, zorder=1)
    ax.scatter(on.speed, on.score, s=70, edgecolors="black", linewidths=1.2, zorder=2,
               label="Pareto front", **colour)
    refs = drawn[is_reference(drawn)]
    ax.scatter(refs.speed, refs.score, s=120, marker="X", facecolors="none", edgecolors="black",
               linewidths=1, zorder=2, label="references (what you could ship instead)")
    for _, r in pd.concat([on, refs[~front[refs.index]]]).iterrows():
        # The base and phase only where the sweep has several.
        text = (describe(r).removesuffix(" (reference)").split(" (")[0] if r.form == AS_IS
                or r.get("reference", False) else
                " ".join([*([r.base] if df.base.nunique() > 1 else []),
                          f"{r.strategy} {r.keep}L",
                          *([r.phase] if df.phase.nunique() > 1 else []),
                          *([] if r.form == "model" else [r.form])]))
        ax.annotate(text, (r.speed, r.score), fontsize=7, xytext=(5, 3), textcoords="offset points")
    if chosen in drawn.index:
        ax.scatter(drawn.speed[chosen], drawn.score[chosen], s=380, facecolors="none",
                   edgecolors="red", linewidths=2, zorder=3, label="recommended")
    ax.set_xlabel("encode speedup vs the unpruned model (x)")
    label = metric_label(df)
    ax.set_ylabel("STSb test Spearman (cosine)" if label == "STSb" else label)
    left_out = len(df[front]) - len(on)
    ax.set_title(f"Which model to ship: {label}, speed and size" + (
        f" ({left_out} front model(s) without a speed timing not shown)" if left_out else ""),
        fontsize=11)
    ax.margins(x=0.15)  # room for the labels of the fastest and slowest points
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _finish(fig, axes, xlabel: str, title: str, path: Path) -> None:
    """Labels, one legend for every panel (each label once), the file."""
    legend: dict[str, object] = {}
    for ax in axes:
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    axes[0].set_ylabel("STSb test Spearman (cosine)")
    fig.suptitle(title, fontsize=11)
    axes[-1].legend(legend.values(), legend.keys(), fontsize=8, loc="upper left",
                    bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_layer_scores(strategy: str, scores: Sequence[float], kept: Sequence[int],
                      path: Path) -> Path:
    """A job's layer scores (its `sbert_exp.selection.METRICS` history) as bars; for
    a strategy that scores each layer (`FILLS_KEPT`) the kept layers' bars are filled."""
    from matplotlib.figure import Figure  # not pyplot: a caller's backend stays as it is

    xlabel, ylabel = SCORE_AXES[Strategy(strategy)]
    fig = Figure(figsize=(7, 3.6))
    ax = fig.subplots()
    filled = [Strategy(strategy) not in FILLS_KEPT or i in kept for i in range(len(scores))]
    ax.bar(range(len(scores)), scores, color=["tab:blue" if f else "white" for f in filled],
           edgecolor="tab:blue")
    ax.set_xticks(range(len(scores)))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(f"{strategy}: kept layers {' '.join(map(str, kept))}", fontsize=11)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
