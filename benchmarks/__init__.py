"""Benchmarks for webui-insights: ``make bench`` (``python -m benchmarks``)."""
