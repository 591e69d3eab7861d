"""Benchmark scripts: speed, efficiency, memory and quality figures printed as Markdown tables.

Run them from the repository root as modules, e.g. ``python -m benchmarks.latency --help``;
``benchmarks/README.md`` lists them. They are not part of the installed package.
"""
