"""Support code of the benchmark suite (issue 9). Not part of the package."""
