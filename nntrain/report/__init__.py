"""`nntrain report` and the report `nntrain fit` writes into its run folder.

A report is a folder: `report.html` (self-contained: figures embedded, no script, no network),
`report.json` (everything `nntrain eval` writes, plus the gallery's samples, the figures' files,
the config and the provenance) and each figure as a PNG. Sections: metrics; per-class figures with
an F1 bar chart; the confusion matrix as a heatmap; a reliability diagram; the most confidently
wrong samples (images, texts or sequences as the data has them); for regression predicted against
true and the residuals; for reconstruction inputs beside their reconstructions; the training
curves of the run's metrics.jsonl; the resolved config and the checkpoint's provenance.
"""

from nntrain.report.writer import FOLDER, WRONG, report_checkpoint, report_run, write_report

__all__ = ["FOLDER", "WRONG", "report_checkpoint", "report_run", "write_report"]
