"""The benchmark scenarios of issue 5, each returning a :class:`bench.report.Section`."""
