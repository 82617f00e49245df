"""pytest configuration for the pytest-benchmark files (benchmarks/bench_*.py).

Run with ``python -m pytest benchmarks/bench_pool.py --benchmark-only`` (or ``benchmarks/``).
The default test run (testpaths = ["tests"]) does not collect this directory.
"""

import pytest


def pytest_collect_file(file_path, parent):
    # bench_*.py do not match pytest's default python_files; collect them when their directory is
    # given (a file named on the command line is collected by pytest itself).
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
