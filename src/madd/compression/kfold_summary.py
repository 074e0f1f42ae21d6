"""Moved to :mod:`madd.reporting.kfold` (``madd kfold-summary``); this name only keeps ``python -m madd.compression.kfold_summary`` working."""

if __name__ == "__main__":
    import runpy

    runpy.run_module("madd.reporting.kfold", run_name="__main__")
