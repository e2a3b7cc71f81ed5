"""The Python client of the prolip-retrieval API (``prolip_retrieval.client``); it needs httpx only."""

from .client import ApiError, AsyncClient, Client, ItemImage, Retry

__all__ = ["ApiError", "AsyncClient", "Client", "ItemImage", "Retry"]
