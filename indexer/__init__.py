"""Gaussian indexes: exact CSD search through FAISS, persistence, and batch corpus indexing."""
