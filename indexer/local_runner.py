"""Running a job in this process: read, encode and commit overlapped, each stage on its own thread.

Stages (as clip-retrieval's reader -> mapper -> writer): a prefetch thread loads chunk k+1
from the plan and prepares it (reads, fetches, decodes; ``ChunkEncoder.prepare``) while the
runner encodes chunk k in one batched call and hands it to a ``commit.GroupCommitter``, which
commits what has arrived meanwhile as one group (one index write, one marker transaction),
bounded by ``CommitPolicy``. So the encoder waits neither for decoding nor for fsyncs.

``overlap=False`` decodes and encodes each chunk in turn instead (only the commits run
beside them): for comparison, since on a CPU encoder both stages want every core. Measured
on 2 shared cores (bench.indexing --variants) the overlap still won.

An encoder error is retried ``encoder_retries`` times with backoff; if it persists the run
stops with ``EncoderUnavailableError`` and the job is paused with its items still pending:
an item is never failed, let alone counted done, because the encoder was down.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor

from .commit import CommitPolicy, GroupCommitter
from .jobstore import JobStore
from .pipeline import ChunkEncoder, EncodedChunk, PreparedChunk
from .remote_encoder import EncoderUnavailableError

log = logging.getLogger(__name__)


class LocalRunner:
    def __init__(self, store: JobStore, chunk_encoder: ChunkEncoder, encoder_retries: int = 3,
                 retry_backoff_s: float = 1.0, commit_policy: CommitPolicy | None = None,
                 overlap: bool = True):
        self.store = store
        self.chunk_encoder = chunk_encoder
        self.encoder_retries = encoder_retries
        self.retry_backoff_s = retry_backoff_s
        self.commit_policy = commit_policy or CommitPolicy()
        self.overlap = overlap

    def run(self, job_id: str, modality: str, index, signal) -> str:
        """Process every pending chunk; returns "completed" or the stop reason from ``signal``."""
        chunks = self.store.pending_chunks(job_id)

        def prepare(chunk: int):
            planned = self.store.chunk(job_id, chunk)
            return planned, self.chunk_encoder.prepare(modality, planned.items)

        committer = GroupCommitter(self.store, index, job_id, self.commit_policy)
        try:
            outcome = self._feed(job_id, chunks, prepare, committer, signal)
        except BaseException:
            committer.close(reraise=False)  # commits what was encoded; the run's own error is the one to report
            raise
        committer.close()  # commits what was encoded, also when stopping; raises a commit's error
        return outcome

    def _feed(self, job_id: str, chunks: list[int], prepare, committer: GroupCommitter, signal) -> str:
        """Prepare (one chunk ahead when overlapping), encode and hand each chunk to the committer."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"prefetch-{job_id[:8]}") as prefetch:
            upcoming: Future | None = prefetch.submit(prepare, chunks[0]) if chunks and self.overlap else None
            for position in range(len(chunks)):
                reason = signal.reason()
                if reason is not None:
                    if upcoming is not None:
                        upcoming.cancel()
                    return reason
                planned, prepared = upcoming.result() if self.overlap else prepare(chunks[position])
                if self.overlap and position + 1 < len(chunks):
                    upcoming = prefetch.submit(prepare, chunks[position + 1])
                encoded = self._encode(prepared, signal)
                if encoded is None:  # stopped while waiting to retry
                    return signal.reason()
                committer.submit(planned, encoded)
        return "completed"

    def _encode(self, prepared: PreparedChunk, signal) -> EncodedChunk | None:
        delay = self.retry_backoff_s
        for attempt in range(self.encoder_retries + 1):
            try:
                return self.chunk_encoder.encode(prepared)
            except Exception as error:  # noqa: BLE001 - whatever broke, it is the encoder's, not the items'
                if attempt == self.encoder_retries:
                    raise EncoderUnavailableError(
                        f"the encoder failed {attempt + 1} times in a row: {type(error).__name__}: {error}"
                    ) from error
                log.warning("encoder failed (%s); retrying in %.1fs", error, delay)
                if signal.wait(delay):
                    return None
                delay *= 2
        return None  # pragma: no cover
