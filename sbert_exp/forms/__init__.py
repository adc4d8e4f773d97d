"""Forms of a model, built and measured in one place.

A form is what a user could ship: the base as it is, pruned to some layers, with its
vocabulary trimmed, exported (ONNX fp32 or int8, torch int8), or static embeddings distilled
from it. `build` writes one and `load` reads it back; `measure` scores it, times it against the
unpruned fp32 base and sizes it. Jobs, references and the benchmarks all go through here:
nothing else prunes, trims, exports or times.
"""

from sbert_exp.forms.build import Form, Trim, build, export_saved, load, load_unpruned, save, shape
from sbert_exp.forms.measure import (
    STS_SPEARMAN,
    evaluated,
    measure,
    scores,
    speed,
    view_evaluated,
)
from sbert_exp.forms.timing import (
    best_encode_seconds,
    best_of,
    latencies,
    speed_vs_unpruned,
    time_views,
)
from sbert_exp.model.modeling import disk_mb

__all__ = ["STS_SPEARMAN", "Form", "Trim", "best_encode_seconds", "best_of", "build", "disk_mb",
           "evaluated", "export_saved", "latencies", "load", "load_unpruned", "measure", "save",
           "scores", "shape", "speed", "speed_vs_unpruned", "time_views", "view_evaluated"]
