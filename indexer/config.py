"""Index configuration and input limits, in one place.

``IndexSpec`` says how a collection's FAISS index is built and searched; it is stored with the
collection and can be given per collection at ``Catalog.create``. ``kind="auto"`` picks by
corpus size (see ``IndexSpec.resolve``): exact flat search while a full pass over the
vectors is cheap, an IVF index above ``auto_ann_min`` items.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import InvalidInputError

# --- input limits (the service exposes these; keep them bounded so one request cannot exhaust memory)
MAX_K = 1000  # results per query
MAX_SHORTLIST = 10_000  # candidates re-ranked per query (two-stage and inclusion modes)
MAX_QUERIES = 4096  # queries per search call
MAX_ID_BYTES = 1024  # UTF-8 bytes per external id (ids are often paths or URLs)
MAX_METADATA_BYTES = 64 * 1024  # JSON bytes per item
MAX_EXTREMES = 1000  # items per side in ``extremes``
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
MODALITIES = ("image", "text")
UNIT_NORM_TOLERANCE = 1e-2  # means further than this from unit norm are refused (the CSD identity needs |mu| = 1)

KINDS = ("auto", "flat", "hnsw", "ivf")
CODECS = ("flat", "sq8", "fp16", "pq")  # how an ANN index stores vectors; "pq" is IVF only


@dataclass(frozen=True)
class IndexSpec:
    """How a collection's FAISS index is built and searched. Every field has a sensible default."""

    kind: str = "auto"  # auto | flat (exact) | hnsw | ivf
    codec: str = "sq8"  # inside hnsw/ivf: flat (float32), sq8, fp16, pq (4-bit fast-scan, ivf only); flat ignores it
    hnsw_m: int = 32  # graph degree; 16 builds faster, 32 reaches higher recall
    ef_construction: int = 64  # HNSW build beam; larger = better graph, slower build
    ef_search: int = 128  # HNSW search beam (per call, never written into the shared index)
    nlist: int | None = None  # IVF lists; None = about 4 * sqrt(N) rounded to a power of two at training
    nprobe: int = 32  # IVF lists scanned per query (per call); 1M items: 8 -> ~1000 QPS, 32 -> ~480 (bench/results)
    pq_m: int | None = None  # PQ sub-quantizers (even); None = one per 4 dimensions of the augmented vector
    refine: int = 4  # ANN kinds fetch refine * k candidates and re-rank them exactly with the stored vectors
    auto_ann_min: int = 250_000  # kind="auto": exact flat below this many items, IVF at and above
    compact_dead_fraction: float = 0.2  # rebuild at the next snapshot when this share of index slots is dead
    gpu: bool = True  # use FAISS GPU for flat/IVF when faiss.get_num_gpus() > 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidInputError(f"index kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.codec not in CODECS:
            raise InvalidInputError(f"codec must be one of {', '.join(CODECS)}, not {self.codec!r}")
        if self.kind == "hnsw" and self.codec == "pq":
            raise InvalidInputError("codec 'pq' is only available with kind 'ivf' (or 'auto')")
        for name, low in (("hnsw_m", 4), ("ef_construction", 8), ("ef_search", 1), ("nprobe", 1), ("refine", 1),
                          ("auto_ann_min", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise InvalidInputError(f"IndexSpec.{name} must be an integer >= {low}, not {value!r}")
        for name in ("nlist", "pq_m"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise InvalidInputError(f"IndexSpec.{name} must be a positive integer or None, not {value!r}")
        if not 0.0 < self.compact_dead_fraction <= 1.0:
            raise InvalidInputError("IndexSpec.compact_dead_fraction must be in (0, 1]")

    def resolve(self, size: int) -> str:
        """The concrete kind for a corpus of ``size`` items: flat, hnsw or ivf."""
        if self.kind != "auto":
            return self.kind
        return "flat" if size < self.auto_ann_min else "ivf"

    def nlist_for(self, size: int) -> int:
        """IVF list count for ``size`` items: the configured one, else ~4 sqrt(N) as a power of two."""
        if self.nlist is not None:
            return self.nlist
        return max(16, 2 ** round(math.log2(4 * math.sqrt(max(size, 1)))))

    def with_overrides(self, **changes: Any) -> IndexSpec:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexSpec:
        if not isinstance(data, dict):
            raise InvalidInputError(f"an index spec must be a JSON object, not {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInputError(f"unknown IndexSpec field(s): {', '.join(unknown)}")
        return cls(**data)
