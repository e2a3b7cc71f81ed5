"""One router per module; the app includes them in this order."""

from . import collections, embed, health, jobs, rank, search, traverse, uncertainty

ROUTERS = (
    search.router,
    uncertainty.router,
    embed.router,
    rank.router,
    traverse.router,
    collections.router,
    jobs.router,
    health.router,
)
