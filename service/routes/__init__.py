"""One router per module; the app includes them in this order."""

from . import collections, embed, health, job_roots, jobs, rank, search, traverse, uncertainty

ROUTERS = (
    search.router,
    uncertainty.router,
    embed.router,
    rank.router,
    traverse.router,
    collections.router,
    job_roots.router,  # before jobs: /v1/jobs/roots must not be read as a job id
    jobs.router,
    health.router,
)
