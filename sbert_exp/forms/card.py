"""A saved model's card: sentence-transformers' README.md, with its card data filled in (language,
licence, name, tags) and a section saying what the model is: its base, the layers kept and how,
its vocabulary, how it was recovered and its scores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sbert_exp.config.schema import CardConfig

SECTION = "## How this model was made"
TEMPLATE = "model_card_template.md"  # written beside the model's folder, read by every save
# The scores a card shows, in this order: metric -> its name on the card.
SHOWN = {"sts_test/spearman_cosine": "STSb test, Spearman of cosines",
         "nli_test/accuracy": "NLI test accuracy (softmax head)"}


@dataclass(frozen=True)
class Card:
    base_name: str
    card: CardConfig
    kept: Sequence[int]
    depth: int
    strategy: str  # how the layers were chosen, in words
    vocab_size: int
    recipe: Sequence[str]  # the recovery stages, in order, each in words
    scores: Mapping[str, float] = field(default_factory=dict)  # the job's metrics


def section(card: Card) -> str:
    """The card's own section, in Markdown."""
    origin = f" (`{card.card.origin}`)" if card.card.origin else ""
    lines = [
        SECTION, "",
        "Made with sbert_exp, by layer pruning.", "",
        f"- **Base model:** {card.base_name}{origin}"
        + (f", licence {card.card.license}" if card.card.license else ""),
        f"- **Languages:** {', '.join(card.card.language) or 'not stated'}",
        f"- **Layers kept:** {len(card.kept)} of {card.depth}: "
        f"{' '.join(map(str, card.kept))} ({card.strategy})",
        f"- **Vocabulary:** {card.vocab_size:,} tokens",
        f"- **Recovery:** {' -> '.join(card.recipe) or 'none (pruned only)'}",
        "", "| score | this model | the base as it is |", "|---|---|---|",
    ]
    names = {**SHOWN, **{k: k for k in sorted(card.scores)
                         if k.startswith(("bitext/", "agreement/"))}}
    for metric, name in names.items():
        if metric in card.scores:
            base = card.scores.get(f"base_model/{metric}")
            lines.append(f"| {name} | {card.scores[metric]:.4f} | "
                         f"{'-' if base is None else f'{base:.4f}'} |")
    return "\n".join(lines) + "\n"


def describe(model, card: Card, folder: Path) -> Path:
    """Fill the model's card data and point it at a template (written into `folder`) that ends
    with this model's section, so that every save of the model, the job's and MLflow's
    `log_model` alike, writes it into README.md. Returns the template's path."""
    data = model.model_card_data
    data.language = list(card.card.language) or None
    data.license = card.card.license
    data.model_name = (f"{card.base_name}, {len(card.kept)} of {card.depth} layers "
                       f"({card.strategy})")
    data.tags = list(dict.fromkeys([*(data.tags or []), "sbert_exp", "layer-pruning"]))
    template = Path(data.template_path).read_text(encoding="utf-8")
    path = folder / TEMPLATE
    path.write_text(template.rstrip() + "\n\n{% raw %}\n" + section(card) + "{% endraw %}\n",
                    encoding="utf-8")
    data.template_path = str(path)
    return path
