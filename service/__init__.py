"""The HTTP search service and the `prolip-retrieval` command line."""
