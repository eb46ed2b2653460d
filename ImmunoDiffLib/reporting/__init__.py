"""Every picture the product draws, as PNG files written atomically.

``figures``: the shared drawing helpers (matplotlib ``Figure`` without pyplot, so nothing
switches Slicer's backend) and the crop and anatomy overviews; ``case_report``: one case's
report and the review figure; ``evaluation``: ROC and Kaplan-Meier curves of an evaluation;
``cohort_montage``: the simulated cohort at a glance.
"""
