"""Option values shared by the CLI and the library, in a module that imports nothing heavy.

The CLI imports only this at start-up (each `nofone` call in a pipeline task should not pay for
torch and scipy before it even parses its options); the modules that implement the choices
import them from here, so there is one list of each.
"""

FORMATS = (
    "auto", "two-column", "htseq", "featurecounts", "star", "salmon", "nfcore", "gct", "matrix",
    "samples-by-genes",
)
STRANDEDNESS = ("unstranded", "forward", "reverse")
DUPLICATE_POLICIES = ("sum", "drop", "error")
SEARCH_METHODS = ("two_opt", "one_opt")
SCALINGS = ("mean", "median", "measured")
TESTS = ("equal-tail-midp", "density")
#: What the equal-tail test holds as normal (`nofone de --null`; stats/outlier_null.py, stats/model_error.py).
NULLS = ("auto", "nb", "outlier", "local", "model-error")  # nofone.stats.nulls
PRESETS = ("small", "paper")
DEFAULT_CHUNK_SIZE = 256
