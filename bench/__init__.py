"""Benchmarks (not tests): each module reports ratios against a baseline measured in the same run.

Each module is runnable (``python -m bench.<name>``) and offers ``run(...) -> list[dict]``.
Run them all with ``python -m bench``, or one with ``python -m bench encoder_bench``.
"""
