"""Experiment bookkeeping and reports.

* :mod:`~madd.reporting.run_record`: what a run leaves for the report (``metrics.json``, ``test_predictions.csv``);
* :mod:`~madd.reporting.collect`: read a multirun folder into one table of jobs;
* :mod:`~madd.reporting.defects`: small/rare defect detection rates from per-image test predictions;
* :mod:`~madd.reporting.tables`: mean ± std over seeds and paired t-tests, as Markdown and CSV;
* :mod:`~madd.reporting.plots`: metric vs a swept value with error bars, PR curves;
* :mod:`~madd.reporting.report`: what ``report.py`` runs.
"""
