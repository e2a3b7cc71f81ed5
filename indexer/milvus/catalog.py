"""``MilvusCatalog``: the ``Catalog`` contract over Milvus collections, shared by any number of replicas.

Each catalog collection is one Milvus collection (``indexer.milvus.schema`` has the layout and
the settings document). Nothing about a collection lives in this process beyond a cache of
opened handles, re-checked against Milvus every ``verify_interval_s`` (a collection dropped, or
dropped and created again, by another replica is noticed within that time; an operation on a
dropped one fails at once with ``UnknownCollectionError``).

Creating is one ``create_collection`` (schema, settings, consistency level), then the indexes
and a load. A crash between those steps leaves a collection that ``get`` completes: it builds
any missing index and loads the collection, both idempotent, whichever replica gets there first.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import replace
from typing import Any

from .. import validation
from ..config import IndexSpec
from ..errors import CollectionExistsError, CorruptIndexError, InvalidInputError, UnknownCollectionError
from ..types import CollectionInfo
from . import schema
from .client import CONSISTENCY_LEVELS, connect, describe_uri, milvus_call, quiet_pymilvus, translate
from .collection import MilvusCollection

log = logging.getLogger(__name__)


class MilvusCatalog:
    """Named collections in one Milvus (``uri``), under ``prefix``; thread-safe."""

    def __init__(self, uri: str, *, token: str | None = None, prefix: str = "prolip", consistency: str = "Strong",
                 index_type: str | None = None, timeout: float = 30.0, verify_interval_s: float = 2.0) -> None:
        if not prefix or not (prefix[0].isalpha() or prefix[0] == "_") or not all(
                c.isalnum() or c == "_" for c in prefix) or len(prefix) > 64:
            raise InvalidInputError(f"the Milvus collection prefix must be letters, digits and '_' (not starting "
                                    f"with a digit), not {prefix!r}")
        if consistency not in CONSISTENCY_LEVELS:
            raise InvalidInputError(f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}, not {consistency!r}")
        if index_type is not None:
            schema.choose_index(IndexSpec(), 8, index_type)  # refuses an unknown type now, not at the first create
        self.uri = uri
        self.where = describe_uri(uri)
        self.prefix = prefix
        self.consistency = consistency
        self.index_type = index_type or None
        self.verify_interval_s = verify_interval_s
        self._client = connect(uri, token, timeout)
        self._lock = threading.RLock()
        self._open: dict[str, tuple[MilvusCollection, float]] = {}  # name -> (handle, last verified)
        self._closed = False
        self._scalar_indexes_supported: bool | None = None
        log.info("collections in Milvus at %s (prefix %r, %s consistency)", self.where, prefix, consistency)

    # ------------------------------------------------------------------ helpers
    def _check_open(self) -> None:
        if self._closed:
            from ..errors import StoreError

            raise StoreError("the catalog is closed")

    def _milvus_name(self, name: str) -> str:
        return schema.collection_name(self.prefix, validation.collection_name(name))

    def _describe(self, name: str) -> tuple[CollectionInfo, schema.IndexChoice]:
        milvus_name = self._milvus_name(name)
        described = milvus_call(f"describe {name!r}")(self._client.describe_collection)(milvus_name)
        info, index, where = schema.read_settings(described, milvus_name)
        if info.name != name:
            raise CorruptIndexError(f"Milvus collection {milvus_name} holds the settings of {info.name!r}, "
                                    f"not {name!r}")
        log.debug("collection %r: settings read from the Milvus collection %s", name, where)
        return info, index

    def _exists(self, name: str) -> bool:
        return bool(milvus_call("has_collection")(self._client.has_collection)(self._milvus_name(name)))

    def _make_ready(self, milvus_name: str, index: schema.IndexChoice) -> None:
        """Build the indexes a load needs, when missing, then load (both idempotent)."""
        client = self._client
        present = set(milvus_call("list_indexes")(client.list_indexes)(milvus_name))
        wanted = client.prepare_index_params()
        missing = False
        if schema.VECTOR not in present:
            wanted.add_index(schema.VECTOR, index_name=schema.VECTOR, index_type=index.index_type, metric_type="IP",
                             params=index.params)
            missing = True
        if schema.LOGVAR not in present:
            wanted.add_index(schema.LOGVAR, index_name=schema.LOGVAR, index_type="FLAT", metric_type="IP")
            missing = True
        if missing:
            milvus_call("create_index")(client.create_index)(milvus_name, wanted)
        self._scalar_indexes(milvus_name, present)
        from pymilvus.client.types import LoadState

        state = milvus_call("get_load_state")(client.get_load_state)(milvus_name)
        if state.get("state") != LoadState.Loaded:
            milvus_call("load_collection")(client.load_collection)(milvus_name)

    def _scalar_indexes(self, milvus_name: str, present: set[str]) -> None:
        """STL_SORT on S and the sample bucket where the server builds scalar indexes (Milvus Lite does not)."""
        from pymilvus.exceptions import MilvusException

        if self._scalar_indexes_supported is False:
            return
        for field in (schema.UNCERTAINTY, schema.SAMPLE):
            if field in present:
                continue
            params = self._client.prepare_index_params()
            params.add_index(field, index_name=field, index_type="STL_SORT")
            try:
                with quiet_pymilvus():
                    self._client.create_index(milvus_name, params)
            except MilvusException as error:
                log.info("Milvus builds no scalar index here (%s); range filters on %s scan the column",
                         error.message, field)
                self._scalar_indexes_supported = False
                return
            self._scalar_indexes_supported = True

    # ------------------------------------------------------------------ public API
    def create(self, name: str, modality: str, dim: int, model_id: str,
               spec: IndexSpec | dict[str, Any] | None = None, *, model_family: str | None = None,
               deterministic: bool = False) -> MilvusCollection:
        """Create an empty collection and return it ready. CollectionExistsError if the name is taken.

        ``model_family`` and ``deterministic`` as ``Catalog.create``: a deterministic collection holds
        points (its log-variance field holds zeros, S = 0, and reads give logvar None).
        """
        from pymilvus import DataType, MilvusClient
        from pymilvus.exceptions import MilvusException

        asked = validation.new_collection(name, modality, dim, model_id, spec, model_family, deterministic)
        name, modality, dim, spec = asked.name, asked.modality, asked.dim, asked.spec
        with self._lock:
            self._check_open()
            milvus_name = self._milvus_name(name)
            if self._exists(name):
                raise CollectionExistsError(f"collection {name!r} already exists")
            info = CollectionInfo(name=name, modality=modality, dim=dim, model_id=model_id, spec=spec,
                                  uuid=uuid.uuid4().hex, created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                  store="milvus", model_family=model_family, deterministic=deterministic)
            index = schema.choose_index(spec, dim, self.index_type)
            document = schema.settings_document(info, index)
            try:
                self._client.create_collection(milvus_name, schema=schema.build_schema(MilvusClient, DataType, info,
                                                                                       index),
                                               consistency_level=self.consistency,
                                               properties={schema.SETTINGS_PROPERTY: document})
            except MilvusException as error:
                if self._exists(name):  # another replica created it first
                    raise CollectionExistsError(f"collection {name!r} already exists") from error
                raise translate(error, f"create {name!r}") from error
            self._make_ready(milvus_name, index)
            log.info("created collection %r in Milvus (%s, dim %d, model %s, %s index)", name, modality, dim,
                     model_id, index.index_type)
            return self._get(name)

    def get(self, name: str) -> MilvusCollection:
        """The collection ``name``. UnknownCollectionError if Milvus has none."""
        return self._get(validation.collection_name(name))

    def _get(self, name: str) -> MilvusCollection:
        with self._lock:
            self._check_open()
            cached = self._open.get(name)
            now = time.monotonic()
            if cached is not None and now - cached[1] < self.verify_interval_s:
                return cached[0]
        if not self._exists(name):
            self._forget(name)
            raise UnknownCollectionError(f"no collection named {name!r} in Milvus at {self.where}")
        info, index = self._describe(name)
        with self._lock:
            cached = self._open.get(name)
            if cached is not None and cached[0].info.uuid == info.uuid:
                self._open[name] = (cached[0], now)
                return cached[0]
        milvus_name = self._milvus_name(name)
        self._make_ready(milvus_name, index)
        handle = MilvusCollection(self._client, info, index, milvus_name, self.consistency)
        with self._lock:
            old = self._open.get(name)
            if old is not None:
                old[0].close()  # dropped and created again elsewhere: the old handle must not write into the new one
            self._open[name] = (handle, now)
        return handle

    def _forget(self, name: str) -> None:
        with self._lock:
            cached = self._open.pop(name, None)
        if cached is not None:
            cached[0].close()

    def list(self) -> list[CollectionInfo]:
        """Every collection under this prefix, sorted by name, with its live size."""
        self._check_open()
        infos = []
        for milvus_name in sorted(milvus_call("list_collections")(self._client.list_collections)()):
            name = schema.name_of(self.prefix, milvus_name)
            if name is None or validation.NAME_PATTERN.fullmatch(name) is None:
                continue
            try:
                info, _ = self._describe(name)
            except (CorruptIndexError, UnknownCollectionError) as error:
                log.warning("skipping Milvus collection %s: %s", milvus_name, error)
                continue
            size = None
            try:
                size = len(self.get(name))
            except Exception as error:  # listing must not fail because one collection is unreadable
                log.warning("cannot count items of %r: %s", name, error)
            infos.append(replace(info, size=size))
        return sorted(infos, key=lambda info: info.name)

    def broken(self) -> dict[str, str]:
        """Collections under this prefix whose settings cannot be read: name -> why (``list`` skips them)."""
        self._check_open()
        found = {}
        for milvus_name in sorted(milvus_call("list_collections")(self._client.list_collections)()):
            name = schema.name_of(self.prefix, milvus_name)
            if name is None or validation.NAME_PATTERN.fullmatch(name) is None:
                continue
            try:
                self._describe(name)
            except CorruptIndexError as error:
                found[name] = str(error)
            except UnknownCollectionError:  # dropped meanwhile by another replica
                continue
        return found

    def drop(self, name: str) -> None:
        """Delete a collection and its data. UnknownCollectionError if there is none."""
        name = validation.collection_name(name)
        self._check_open()
        if not self._exists(name):
            raise UnknownCollectionError(f"no collection named {name!r} in Milvus at {self.where}")
        self._forget(name)
        milvus_call(f"drop {name!r}")(self._client.drop_collection)(self._milvus_name(name))
        log.info("dropped collection %r from Milvus", name)

    def rebuild(self, name: str) -> MilvusCollection:
        """Rebuild the vector index from the stored vectors (release, drop index, build, load).

        The collection cannot be searched while it is released: on every replica, for the
        build's duration. Milvus' own WAL and segments are the truth; there is no snapshot to redo.
        """
        handle = self.get(name)
        client, milvus_name = self._client, handle.milvus_name
        milvus_call("release")(client.release_collection)(milvus_name)
        milvus_call("drop_index")(client.drop_index)(milvus_name, schema.VECTOR)
        self._make_ready(milvus_name, handle.index_choice)
        return handle

    def unload(self, name: str, snapshot: bool = True) -> None:
        """Forget the handle in this process (Milvus keeps the collection loaded for the other replicas)."""
        self._forget(validation.collection_name(name))

    def __contains__(self, name: object) -> bool:
        return (isinstance(name, str) and validation.NAME_PATTERN.fullmatch(name) is not None
                and self._exists(name))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            for name in list(self._open):
                self._forget(name)
            self._closed = True
        self._client.close()

    def __enter__(self) -> MilvusCatalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
