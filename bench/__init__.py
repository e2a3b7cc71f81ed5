"""Benchmarks (not tests): each module reports ratios against a baseline measured in the same run.

Run them all with ``python -m bench``, or one with ``python -m bench encoder_bench``.
"""
