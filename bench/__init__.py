"""nbwork's benchmark suite (issue 7): ``python -m bench [--quick]``.

Every benchmark runs nbwork and its comparison (Huey, a raw ``ProcessPoolExecutor(2)``,
sequential Pillow) in the same run, alternating, and reports ratios; the results go to
``bench/results.json`` and a table in ``BENCHMARKS.md``. See ``bench/suite.py``.
"""
