"""Benchmarks. Each module is runnable (`python -m bench.<name>`) and offers `run(...) -> list[dict]`."""
