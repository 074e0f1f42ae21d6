"""Moved to :mod:`madd.reporting.segmentation` (``madd segmentation-report``); this name only keeps ``python -m madd.models.segmentation.report`` working."""

if __name__ == "__main__":
    import runpy

    runpy.run_module("madd.reporting.segmentation", run_name="__main__")
