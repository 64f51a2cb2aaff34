"""The research design as data: the research questions, numbered once, with their pairs, tables and figures.

Reader: the comparison (:func:`heritage.report.comparison.build_comparison` builds each question's
tables, :func:`~heritage.report.comparison.findings` states each one's verdict), the comparison
notebook (it loops over :data:`QUESTIONS`) and the POC configs' comments, which cite these numbers.
A question's *pair selector* picks, from the summary of settings, the pairs (A, B) that answer it;
its paired table holds the verdicts (:func:`heritage.report.verdicts.decide`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd

from heritage.report.frames import CONFIG_FIELDS, FAMILY_ORDER, _same, poc_label

ABLATION_POC = "poc59v2_flagship"  # the POC whose variants form the loss ablation (RQ5)
# ABLATION_POC's variant that is the thin-damage recipe (RQ6): several changes at once, so neither a loss
# variant (RQ5) nor a patch arm that changes only the sampling (RQ4).
THIN_VARIANT = "thin"


def loss_variants(summary: pd.DataFrame, poc: str = ABLATION_POC) -> list[str]:
    """Variants of ``poc`` that change only the loss or the class weights against the main configuration.

    Other variants (e.g. a resolution arm) answer other questions and stay out of the loss ablation.
    """
    rows = summary[summary["poc"] == poc]
    main = rows[rows["variant"] == ""].set_index("encoder")
    chosen = []
    for _, row in rows[rows["variant"] != ""].iterrows():
        if row["encoder"] in main.index and row["protocol"] == main.at[row["encoder"], "protocol"] and all(
                _same(row[f], main.at[row["encoder"], f]) for f in CONFIG_FIELDS if f not in ("loss", "class_weights")):
            chosen.append(row["variant"])
    return list(dict.fromkeys(chosen))


def rq1_pairs(summary: pd.DataFrame) -> list[tuple[int, int]]:
    """RQ1 (CNN vs ViT vs hybrid): encoders of different families within each POC's main setting."""
    done = summary[(summary["variant"] == "") & (summary["n_runs"] > 0)]
    rank = {family: i for i, family in enumerate(FAMILY_ORDER)}
    pairs = []
    for _, rows in done.groupby(["poc", "protocol"], sort=False):
        ordered = sorted(rows.index, key=lambda i: (rank.get(rows.at[i, "family"], len(rank)), i))
        pairs += [(i, j) for k, i in enumerate(ordered) for j in ordered[k + 1:]
                  if rows.at[i, "family"] != rows.at[j, "family"]]
    return pairs


def rq2_pairs(summary: pd.DataFrame) -> list[tuple[int, int]]:
    """RQ2 (multi-task or not): each hierarchical setting vs every single-task main setting, same encoder."""
    done = summary[(summary["variant"] == "") & (summary["n_runs"] > 0)]
    multi = done[done["architecture"] == "hierarchical_upernet"]
    single = done[done["architecture"] != "hierarchical_upernet"]
    return [(i, j) for i in multi.index for j in single.index
            if all(multi.at[i, key] == single.at[j, key] for key in ("encoder", "protocol"))]


def rq3_pairs(summary: pd.DataFrame) -> list[tuple[int, int]]:
    """RQ3 (resolution): same encoder and protocol at two image sizes (larger first), fewest confounders first."""
    done = summary[summary["n_runs"] > 0]
    pairs = [(i, j) for i in done.index for j in done.index
             if done.at[i, "encoder"] == done.at[j, "encoder"] and done.at[i, "protocol"] == done.at[j, "protocol"]
             and done.at[i, "image_size"] > done.at[j, "image_size"]]

    def confounders(pair: tuple[int, int]) -> int:
        a, b = done.loc[pair[0]], done.loc[pair[1]]
        return sum(not _same(a[f], b[f]) for f in CONFIG_FIELDS if f != "image_size")

    return sorted(pairs, key=lambda p: (confounders(p), p))


def ablation_pairs(summary: pd.DataFrame, poc: str = ABLATION_POC) -> list[tuple[int, int]]:
    """Each loss variant vs the POC's main configuration on the same encoder and protocol."""
    done = summary[(summary["poc"] == poc) & (summary["n_runs"] > 0)]
    main = done[done["variant"] == ""]
    variants = done[done["variant"].isin(loss_variants(summary, poc))]
    return [(i, j) for i in variants.index for j in main.index
            if done.at[i, "encoder"] == main.at[j, "encoder"] and done.at[i, "protocol"] == main.at[j, "protocol"]]


def rq4_pairs(summary: pd.DataFrame) -> list[tuple[int, int]]:
    """RQ4 (letterbox vs patch): each patch variant (A) vs its POC's main letterbox setting (B), same encoder
    and protocol (the flagship's ``patch`` arm against its main configuration); the thin-damage recipe, which
    changes more than the sampling, is RQ6's."""
    done = summary[summary["n_runs"] > 0]
    main = done[(done["variant"] == "") & (done["sampling"] == "letterbox")]
    patch = done[(done["variant"] != "") & (done["sampling"] == "patch") & ~_is_thin_recipe(done)]
    return [(i, j) for i in patch.index for j in main.index
            if all(patch.at[i, key] == main.at[j, key] for key in ("poc", "encoder", "protocol"))]


def rq6_pairs(summary: pd.DataFrame) -> list[tuple[int, int]]:
    """RQ6 (the thin-damage recipe): ABLATION_POC's THIN_VARIANT (A) vs its main configuration (B), same encoder
    and protocol."""
    done = summary[(summary["poc"] == ABLATION_POC) & (summary["n_runs"] > 0)]
    main = done[done["variant"] == ""]
    thin = done[_is_thin_recipe(done)]
    return [(i, j) for i in thin.index for j in main.index
            if all(thin.at[i, key] == main.at[j, key] for key in ("encoder", "protocol"))]


def _is_thin_recipe(rows: pd.DataFrame) -> pd.Series:
    return (rows["poc"] == ABLATION_POC) & (rows["variant"] == THIN_VARIANT)


@dataclass(frozen=True)
class ResearchQuestion:
    """One research question: what it asks, the pairs that answer it, and the tables and figures that show it.

    ``table`` is its paired table (one row per pair, the verdicts :func:`findings` reads), made with
    ``caption`` from the pairs ``pairs(summary)`` selects, ``factors`` being the summary columns under
    test (the first is recorded as ``factor_a/b``). ``tables`` and ``figures`` are every table and
    figure the comparison shows for it, in order, the paired table included. ``poc``: the question is
    about one POC's arms and is asked only when the plan holds that POC. ``budget_matched``: a pair is
    compared only when both arms have the same training budget (``heritage.report.paired.BUDGET_FIELDS``).
    """

    number: int
    title: str  # a heading: "CNN vs ViT vs hybrid"
    question: str  # the question as the findings state it
    table: str
    caption: str
    pairs: Callable[[pd.DataFrame], list[tuple[int, int]]]
    factors: tuple[str, ...]
    tables: tuple[str, ...]
    figures: tuple[str, ...] = ()
    poc: str | None = None
    budget_matched: bool = False
    about: str = ""  # what its pairs are, for a reader (the comparison notebook shows it under the heading)

    @property
    def label(self) -> str:
        return f"RQ{self.number}"

    @property
    def text(self) -> str:
        """The question as ``provenance.json``'s findings state it: "RQ1: does the encoder family ... change ...?"."""
        return f"{self.label}: {self.question}"


# The research questions, numbered once, in the order a reader meets them. Table and figure names are
# those of paper/tables/ and paper/figures/; the configs' comments cite these numbers.
QUESTIONS: tuple[ResearchQuestion, ...] = (
    ResearchQuestion(
        1, "CNN vs ViT vs hybrid", "does the encoder family (CNN, ViT, hybrid) change the test mIoU?",
        "rq1_family", "RQ1 - CNN vs ViT vs hybrid: encoders of different families in the same POC, paired over folds",
        rq1_pairs, ("family",), ("rq1_family",),
        about="Encoders of different families within each POC's main configuration, paired over the folds both "
              "have run."),
    ResearchQuestion(
        2, "multi-task or not", "does the multi-task hierarchical model change the test mIoU?",
        "rq2_multitask", "RQ2 - multi-task (hierarchical UPerNet, A) vs single-task (UNet, B) on the same encoder, "
        "paired over folds", rq2_pairs, ("architecture", "loss"), ("rq2_multitask",),
        about="Each hierarchical (multi-task) setting against every single-task main setting on the same encoder "
              "and protocol; the multi-task loss changes with the model by design."),
    ResearchQuestion(
        3, "resolution", "does the image size change the test mIoU?",
        "rq3_resolution", "RQ3 - resolution: the same encoder at a larger (A) and a smaller (B) image size, paired "
        "over folds", rq3_pairs, ("image_size",), ("rq3_resolution",),
        about="The same encoder and protocol at two image sizes (the larger is A), the pairs with the fewest other "
              "differences first."),
    ResearchQuestion(
        4, "letterbox or patch, at the same training budget",
        "at the same training budget, does training on patches of the working resolution instead of letterboxes "
        "change the test mIoU?",
        "rq4_sampling", "RQ4 - patch sampling at the working resolution (A) vs a letterbox (B) at the same "
        "training budget (image size, batch size, epochs, training samples: the same steps and training pixels), "
        "tested on the same pixels at the working resolution, paired over folds",
        rq4_pairs, ("sampling", "working_resolution"), ("rq4_sampling", "rq4_per_class"),
        figures=("rq4_per_class_differences",), budget_matched=True,
        about="Each `patch` arm (trained on `image_size` crops of the working resolution, a share of them centred on "
              "damage) against its POC's main letterbox configuration, both tested on the same pixels at the working "
              "resolution. A pair is compared only when both arms have the same image size, batch size, epochs and "
              "training samples (the same steps and training pixels); otherwise the table says what differs and "
              "compares nothing. Per class: each arm's test IoU, the paired difference over the folds whose test "
              "part holds the class, and the verdict rules on it, the thin classes "
              "(`heritage.data.taxonomy.THIN_CLASSES`) marked."),
    ResearchQuestion(
        5, f"the loss ablation of {poc_label(ABLATION_POC)}",
        f"does a loss variant change the test mIoU? (the loss ablation of {poc_label(ABLATION_POC)})",
        "ablation_paired", f"{poc_label(ABLATION_POC)} loss ablation: each variant (A) vs the main configuration (B), "
        "paired over folds", ablation_pairs, ("variant", "loss", "class_weights"),
        (f"loss_ablation_{ABLATION_POC}", "ablation_paired"), poc=ABLATION_POC,
        about="The POC's variants that change only the loss or the class weights (`loss_variants`) beside its "
              "main configuration, mIoU per variant and encoder; then each variant against the main "
              "configuration, paired over folds."),
    ResearchQuestion(
        6, "the thin-damage recipe, at the same training budget",
        "at the same training budget, does the thin-damage recipe change the test mIoU and the thin classes' IoU?",
        "rq6_thin", f"RQ6 - the thin-damage recipe of {poc_label(ABLATION_POC)} (A) vs its main configuration (B) at "
        "the same training budget (image size, batch size, epochs, training samples), tested on the same pixels at "
        "the working resolution, paired over folds",
        rq6_pairs, ("variant", "sampling", "loss"), ("rq6_thin", "rq6_per_class"),
        figures=("rq6_per_class_differences",), poc=ABLATION_POC, budget_matched=True,
        about=f"The `{THIN_VARIANT}` variant changes several things at once, each chosen for 1-4 px damage and "
              "measured one by one in `bench/thin_check.py`: patches of the stored resolution, most of them centred "
              "on damage; skips at full and half resolution into the decoder; Dice + cross-entropy with a Skeleton "
              "Recall term on the thin classes; flip test-time augmentation. It is compared with the main "
              "configuration only at the same image size, batch size, epochs and training samples; per class, the "
              "paired difference over the folds whose test part holds the class, the thin classes "
              "(`heritage.data.taxonomy.THIN_CLASSES`) and their mean marked."),
)


def question(table: str) -> ResearchQuestion:
    """The research question whose paired table is named ``table``."""
    for found in QUESTIONS:
        if found.table == table:
            return found
    raise KeyError(f"no research question with the paired table {table!r}; "
                   f"they are {', '.join(q.table for q in QUESTIONS)}")
