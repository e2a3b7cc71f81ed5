"""Collections in Milvus: the ``Catalog`` / ``GaussianIndex`` contract over Milvus Lite, Standalone or Distributed.

    from indexer.milvus import MilvusCatalog
    catalog = MilvusCatalog("http://milvus:19530")      # or a local file: Milvus Lite in this process
    index = catalog.create("photos", modality="image", dim=768, model_id="...")
    index.add(ids, mean, logvar, metadata); index.search(q_mean, q_logvar, k=10)

``indexer.open_catalog`` picks this backend when given a Milvus URI (``PROLIP_MILVUS_URI``).
Layout: ``schema``; reads and writes: ``collection``; statistics: ``statistics``.
"""

from .catalog import MilvusCatalog
from .collection import MilvusCollection

__all__ = ["MilvusCatalog", "MilvusCollection"]
