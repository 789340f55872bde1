"""Speed and memory benchmarks (`nox -s bench`): each figure is measured beside its baseline in one run."""
