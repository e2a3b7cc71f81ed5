"""How a collection is laid out in Milvus: fields, index parameters, settings, names.

One Milvus collection per catalog collection, named ``<prefix>_<escaped name>``. Per item:

- ``id``          VARCHAR primary key: the external id (upsert and delete by it).
- ``vector``      FLOAT_VECTOR [mu, -S/2, 0...]: the augmented mean. Its inner product with [mu_q, 1]
                  is the CSD order, with [mu_q, 0] the mean cosine (as in the FAISS path). Zero-padded
                  to a multiple of 8 columns (inner products are unchanged) so PQ and GPU indexes,
                  which need a dimension divisible by their sub-vector count, accept it.
- ``logvar``      FLOAT_VECTOR [D]: log-variances, read back for the inclusion test, ``get`` and
                  ``extremes``. float32 because it is what the FAISS path stores (results agree bit
                  for bit) and because a FLOAT16_VECTOR as a search output hung Milvus Lite 2.5.1.
                  Milvus wants an index on every vector field before it loads a collection: a FLAT
                  index, which adds nothing beyond the raw column. It is never searched.
- ``uncertainty`` DOUBLE: S = sum of variances, in float64 like the FAISS table (exact CSD re-score,
                  percentiles by counted range filters).
- ``sample``      INT16: crc32(id) mod 1024, a deterministic hash bucket; ``sample < b`` selects about
                  b/1024 of the items, uniformly, for statistics of very large collections.
- ``metadata``    JSON: the item's metadata, filterable with Milvus boolean expressions
                  (``metadata["year"] >= 2010``).

Collection settings (name, uuid, modality, dim, model id, index spec) are one JSON document kept
in the collection's schema description, which every Milvus keeps (Lite, Standalone, Distributed),
and also in its properties (``prolip.settings``), which Standalone and Distributed keep and Lite
2.5 drops; reading prefers the properties and falls back to the description. Both are written by
the one ``create_collection`` call, so a collection never exists without its settings.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

from ..config import MAX_ID_BYTES, IndexSpec
from ..errors import CorruptIndexError, InvalidInputError
from ..types import CollectionInfo

SETTINGS_FORMAT = 1
SETTINGS_PROPERTY = "prolip.settings"
SAMPLE_BUCKETS = 1024
PAD_TO = 8

ID, VECTOR, LOGVAR, UNCERTAINTY, SAMPLE, METADATA = "id", "vector", "logvar", "uncertainty", "sample", "metadata"

# Milvus index type -> (our kind name, the search parameter a SearchKnobs value feeds)
INDEX_TYPES: dict[str, tuple[str, str | None]] = {
    "FLAT": ("flat", None),
    "IVF_FLAT": ("ivf", "nprobe"),
    "IVF_SQ8": ("ivf", "nprobe"),
    "IVF_PQ": ("ivf", "nprobe"),
    "HNSW": ("hnsw", "ef"),
    "DISKANN": ("diskann", "search_list"),
    "GPU_CAGRA": ("cagra", "itopk_size"),
    "GPU_IVF_FLAT": ("ivf", "nprobe"),
    "GPU_IVF_PQ": ("ivf", "nprobe"),
    "GPU_BRUTE_FORCE": ("flat", None),
    "AUTOINDEX": ("auto", None),
}
APPROXIMATE_DISTANCES = {"IVF_SQ8", "IVF_PQ", "GPU_IVF_PQ"}  # these candidates are re-scored from fetched vectors
DEFAULT_NLIST = 1024  # per segment: Milvus builds one IVF index per sealed segment (~1 GB, ~150k rows at D=768)


def stored_dim(dim: int) -> int:
    """Columns of the ``vector`` field for embeddings of ``dim``: D + 1 rounded up to a multiple of 8."""
    return -(-(dim + 1) // PAD_TO) * PAD_TO


def collection_name(prefix: str, name: str) -> str:
    """The Milvus collection of catalog collection ``name``: letters and digits kept, '_' -> '__', '-' -> '_h'.

    Injective (no two names meet) and readable; Milvus allows [A-Za-z0-9_] in names.
    """
    return f"{prefix}_" + name.replace("_", "__").replace("-", "_h")


def name_of(prefix: str, milvus_name: str) -> str | None:
    """The catalog name of a Milvus collection, or None when it is not one of this prefix's."""
    head = f"{prefix}_"
    if not milvus_name.startswith(head):
        return None
    escaped, out, i = milvus_name[len(head):], [], 0
    while i < len(escaped):
        if escaped[i] == "_":
            if i + 1 >= len(escaped) or escaped[i + 1] not in "_h":
                return None
            out.append("_" if escaped[i + 1] == "_" else "-")
            i += 2
        else:
            out.append(escaped[i])
            i += 1
    return "".join(out) or None


def sample_bucket(item_id: str) -> int:
    return zlib.crc32(item_id.encode("utf-8")) % SAMPLE_BUCKETS


@dataclass(frozen=True)
class IndexChoice:
    """The Milvus index of the ``vector`` field and how a search sets its recall/speed knob."""

    index_type: str
    params: dict[str, Any]

    @property
    def kind(self) -> str:
        return INDEX_TYPES[self.index_type][0]

    @property
    def approximate_distances(self) -> bool:
        """True when the index returns distances of compressed codes (SQ/PQ), not of the stored floats."""
        return self.index_type in APPROXIMATE_DISTANCES

    def search_params(self, spec: IndexSpec, knobs: Any, fetch: int) -> dict[str, Any]:
        """Per-call search parameters (never written into the index): IP metric plus the knob."""
        knob = INDEX_TYPES[self.index_type][1]
        params: dict[str, Any] = {}
        if knob == "nprobe":
            params["nprobe"] = min(knobs.nprobe or spec.nprobe, int(self.params.get("nlist", DEFAULT_NLIST)))
        elif knob == "ef":
            params["ef"] = max(knobs.ef_search or spec.ef_search, fetch)
        elif knob == "search_list":
            params["search_list"] = max(knobs.ef_search or spec.ef_search, fetch)
        elif knob == "itopk_size":
            params["itopk_size"] = max(knobs.ef_search or spec.ef_search, fetch)
        return {"metric_type": "IP", "params": params}

    def to_dict(self) -> dict[str, Any]:
        return {"index_type": self.index_type, "params": self.params}


def choose_index(spec: IndexSpec, dim: int, override: str | None = None) -> IndexChoice:
    """The index for a new collection: from the spec, or a deployment-wide Milvus index type.

    In Milvus the index type is fixed when a collection is created (changing it means a release
    and a rebuild), so ``kind="auto"`` means FLAT: exact search, as the FAISS path uses below
    ``auto_ann_min`` items. Pick hnsw / ivf (or ``PROLIP_MILVUS_INDEX``, e.g. DISKANN or GPU_CAGRA
    on a GPU deployment) for collections that will pass ~10^7 items.
    """
    if override:
        index_type = override.upper()
        if index_type not in INDEX_TYPES:
            raise InvalidInputError(f"unknown Milvus index type {override!r}; one of {', '.join(INDEX_TYPES)}")
    else:
        kind = "flat" if spec.kind == "auto" else spec.kind
        if kind == "flat":
            index_type = "FLAT"
        elif kind == "hnsw":
            index_type = "HNSW"
        else:
            index_type = {"flat": "IVF_FLAT", "sq8": "IVF_SQ8", "fp16": "IVF_FLAT", "pq": "IVF_PQ"}[spec.codec]
    params: dict[str, Any] = {}
    if index_type.startswith(("IVF", "GPU_IVF")):
        params["nlist"] = spec.nlist or DEFAULT_NLIST
        if index_type.endswith("PQ"):
            params.update(m=spec.pq_m or stored_dim(dim) // 4, nbits=8)
    elif index_type == "HNSW":
        params.update(M=spec.hnsw_m, efConstruction=spec.ef_construction)
    elif index_type == "GPU_CAGRA":
        params.update(intermediate_graph_degree=2 * spec.hnsw_m, graph_degree=spec.hnsw_m)
    return IndexChoice(index_type, params)


# ----------------------------------------------------------------------------- settings document

def settings_document(info: CollectionInfo, index: IndexChoice) -> str:
    return json.dumps({"prolip": SETTINGS_FORMAT, "name": info.name, "uuid": info.uuid, "modality": info.modality,
                       "dim": info.dim, "model_id": info.model_id, "spec": info.spec.to_dict(),
                       "created_at": info.created_at, "index": index.to_dict(),
                       "model_family": info.model_family, "deterministic": info.deterministic}, sort_keys=True,
                      separators=(",", ":"))


def read_settings(described: dict[str, Any], milvus_name: str) -> tuple[CollectionInfo, IndexChoice, str]:
    """(info, index, where the settings were read) from ``describe_collection``'s answer.

    CorruptIndexError when neither place holds a readable document or the two disagree.
    """
    from_properties = (described.get("properties") or {}).get(SETTINGS_PROPERTY)
    from_description = described.get("description") or None
    text, where = (from_properties, "properties") if from_properties else (from_description, "description")
    if from_properties and from_description and from_properties != from_description:
        raise CorruptIndexError(f"Milvus collection {milvus_name}: its properties and description hold different "
                                "settings")
    try:
        document = json.loads(text or "")
        if document.get("prolip") != SETTINGS_FORMAT:
            raise ValueError(f"settings format {document.get('prolip')!r}")
        info = CollectionInfo(name=document["name"], modality=document["modality"], dim=int(document["dim"]),
                              model_id=document["model_id"], spec=IndexSpec.from_dict(document["spec"]),
                              uuid=document["uuid"], created_at=document["created_at"], store="milvus",
                              model_family=document.get("model_family"),  # absent: made before families
                              deterministic=bool(document.get("deterministic", False)))
        index = IndexChoice(document["index"]["index_type"], dict(document["index"]["params"]))
        if index.index_type not in INDEX_TYPES:
            raise ValueError(f"index type {index.index_type!r}")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CorruptIndexError(f"Milvus collection {milvus_name} has no readable prolip settings ({error})") from None
    return info, index, where


def build_schema(client_class: Any, data_type: Any, info: CollectionInfo, index: IndexChoice) -> Any:
    schema = client_class.create_schema(auto_id=False, enable_dynamic_field=False,
                                        description=settings_document(info, index))
    schema.add_field(ID, data_type.VARCHAR, is_primary=True, max_length=MAX_ID_BYTES)
    schema.add_field(VECTOR, data_type.FLOAT_VECTOR, dim=stored_dim(info.dim))
    schema.add_field(LOGVAR, data_type.FLOAT_VECTOR, dim=info.dim)
    schema.add_field(UNCERTAINTY, data_type.DOUBLE)
    schema.add_field(SAMPLE, data_type.INT16)
    schema.add_field(METADATA, data_type.JSON)
    return schema


def quote(text: str) -> str:
    """A string literal for a Milvus boolean expression (JSON escaping is a subset Milvus reads)."""
    return json.dumps(text, ensure_ascii=False)
