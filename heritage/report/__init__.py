"""Tables, figures and views made from run folders, one module per reader.

- the comparison (``99_comparison``, ``paper/``): :mod:`~heritage.report.frames` (runs and plan as
  frames, labels), :mod:`~heritage.report.design` (the research questions, numbered once, with their
  pairs, tables and figures), :mod:`~heritage.report.verdicts` (the verdict rules, :func:`decide`),
  :mod:`~heritage.report.tables` (:class:`Table` and its cells), :mod:`~heritage.report.descriptive`
  (per POC, encoder and class; the loss ablation's numbers; the seeds' protocol),
  :mod:`~heritage.report.paired` (paired comparisons, the artwork bootstrap, RQ4's budget check),
  :mod:`~heritage.report.figures`, and :mod:`~heritage.report.comparison`, which builds and writes them all;
- one run (the POC notebooks): :mod:`~heritage.report.run_views`;
- a data folder (``00_dataset``): :mod:`~heritage.report.dataset_views`.

The provenance banner and a run's ``metrics.json`` record live below this package, in
:mod:`heritage.training.provenance` (predict's report uses the banner too). No number is typed in here
except the seeds' published ones (``SEEDS_REPORTED``): every cell comes from a run, and "A better" /
"B better" is only stated where :func:`decide` allows it.

This module re-exports the names used outside the package, so ``from heritage import report;
report.X`` works: the POC notebooks (run views), ``heritage.inference.predict`` and ``heritage.pipeline``
(banner, ``load_metrics``), ``bench/*.py`` and the tests.
"""

from heritage.training.provenance import (ARTEFACT, RUN_COLUMNS, SYNTHETIC, Banner, banner_html, data_kind,
                                          load_metrics, make_banner, run_banner)
from heritage.training.runs import METRICS_FILE
from heritage.report.comparison import Comparison, build_comparison, findings, write_comparison
from heritage.report.dataset_views import (class_share_table, example_ids, overlay, plot_class_shares,
                                           plot_examples, plot_material_content, plot_split_balance, split_balance)
from heritage.report.descriptive import (SEEDS_PROTOCOL_VARIANT, SEEDS_REPORTED, SEEDS_REPORTED_SOURCE,
                                         ablation_table, encoder_table, per_class_table, poc_table,
                                         seeds_protocol_table, thin_damage_table, thin_per_class_table, time_table)
from heritage.report.design import (ABLATION_POC, QUESTIONS, ResearchQuestion, ablation_pairs, loss_variants,
                                    rq1_pairs, rq2_pairs, rq3_pairs, rq4_pairs, rq6_pairs)
from heritage.report.figures import (PER_IMAGE_CAPTION, add_footer, footer_text, miou_throughput_plot,
                                     per_class_heatmap, per_image_images, per_image_plot, rq4_per_class_plot,
                                     rq6_per_class_plot, save_figure)
from heritage.report.frames import (CONFIG_FIELDS, SETTING, load_runs, planned_runs, poc_label, poc_title,
                                    select_runs, setting_label, summarise)
from heritage.report.paired import (BUDGET_FIELDS, THIN_DAMAGE, THIN_MEAN, artwork_bootstrap, comparison_table,
                                    question_table, rq4_per_class_table, rq4_table, rq6_per_class_table)
from heritage.report.run_views import (config_details_html, config_table, confusion_matrix, per_class_frame,
                                       plot_confusion, plot_history, plot_per_class_iou, prediction_panels,
                                       read_history, results_table, run_headline, thin_frame, thin_headline)
from heritage.report.tables import ABSENT, NO_RUN, NOT_RECORDED, Table, latex_text
from heritage.report.verdicts import (CONFIDENCE, MIN_PAIRED_UNITS, NOT_COMPARED, NOT_SUPPORTED, PairedDifference,
                                      Verdict, decide, paired_difference)

__all__ = [
    # heritage.training.provenance (predict, paper, gallery, tests)
    "ARTEFACT", "METRICS_FILE", "RUN_COLUMNS", "SYNTHETIC", "Banner", "banner_html", "data_kind", "load_metrics",
    "make_banner", "run_banner",
    # the comparison (99_comparison, paper, tests)
    "Comparison", "build_comparison", "findings", "write_comparison",
    "SEEDS_PROTOCOL_VARIANT", "SEEDS_REPORTED", "SEEDS_REPORTED_SOURCE", "ablation_table", "encoder_table",
    "per_class_table", "poc_table", "seeds_protocol_table", "thin_damage_table", "thin_per_class_table", "time_table",
    "ABLATION_POC", "QUESTIONS", "ResearchQuestion", "ablation_pairs", "loss_variants", "rq1_pairs", "rq2_pairs",
    "rq3_pairs", "rq4_pairs", "rq6_pairs",
    "PER_IMAGE_CAPTION", "add_footer", "footer_text", "miou_throughput_plot", "per_class_heatmap",
    "per_image_images", "per_image_plot", "rq4_per_class_plot", "rq6_per_class_plot", "save_figure",
    "CONFIG_FIELDS", "SETTING", "load_runs", "planned_runs", "poc_label", "poc_title", "select_runs",
    "setting_label", "summarise",
    "BUDGET_FIELDS", "THIN_DAMAGE", "THIN_MEAN", "artwork_bootstrap", "comparison_table", "question_table",
    "rq4_per_class_table", "rq4_table", "rq6_per_class_table",
    "ABSENT", "NO_RUN", "NOT_RECORDED", "Table", "latex_text",
    "CONFIDENCE", "MIN_PAIRED_UNITS", "NOT_COMPARED", "NOT_SUPPORTED", "PairedDifference", "Verdict", "decide",
    "paired_difference",
    # one run (the POC notebooks, tests/test_notebook_hygiene.py)
    "config_details_html", "config_table", "confusion_matrix", "per_class_frame", "plot_confusion", "plot_history",
    "plot_per_class_iou", "prediction_panels", "read_history", "results_table", "run_headline", "thin_frame",
    "thin_headline",
    # a data folder (00_dataset)
    "class_share_table", "example_ids", "overlay", "plot_class_shares", "plot_examples", "plot_material_content",
    "plot_split_balance", "split_balance",
]
