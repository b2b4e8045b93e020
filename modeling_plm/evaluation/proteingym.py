"""ProteinGym zero-shot variant-effect benchmark: score every mutant of every assay, ProteinGym's metrics per assay,
its aggregation, a BLOSUM62 baseline, resumable.

Two layouts of the data (`load_layout` tells which it found):
  - "singles" (github.com/ginnm/SingleSiteProteinGYM, the 87 single-substitution assays of ProteinGym v0.1):
    `dms/<assay>.csv` (mutant, score), `wildtypes.fasta` (headers `<assay>.csv`), and optionally a ProteinGym
    reference CSV beside them. Assay names are matched to the reference's DMS_id verbatim, else by UniProt entry +
    first author + year (v1 renamed some assays, e.g. `P53_HUMAN_Giacomelli_NULL_Nutlin_2018` is
    `P53_HUMAN_Giacomelli_2018_Null_Nutlin`), the remaining name parts disambiguating, and only where the
    reference's target_seq is the assay's wild type. An assay without reference metadata gets the median of its
    DMS scores as binarization cutoff (ProteinGym's rule when no cutoff is set) and the category "unknown".
  - "v1" (ProteinGym v1): a reference file (`DMS_substitutions.csv`: DMS_id, DMS_filename, target_seq,
    DMS_binarization_cutoff, coarse_selection_type, UniProt_ID, ...) and a folder of DMS files (mutant, DMS_score,
    DMS_score_bin); the wild type is the reference's target_seq.

Binary labels: the DMS file's `DMS_score_bin` when it has one (v1), else DMS score >= cutoff.

Aggregation (ProteinGym's `performance_DMS_benchmarks.py`): per metric, the mean over the assays of one UniProt
entry and function category, then the mean per category, then the mean of the categories ("unknown" is left out of
that last mean unless it is the only category). The plain mean over assays is reported too, with a seeded
percentile-bootstrap interval (assays resampled).

Resume: each (assay, scorer) result is written atomically to `OUTPUT_DIR/proteingym_assays/` as it finishes; a
rerun reuses the results recorded with the same settings and scores only the rest.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import math
import os
import random
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data.fasta import read_fasta
from ..inference.scoring import DEFAULT_BATCH_SIZE, VARIANT_METHODS, parse_mutations, score_variants, window_residues
from .baselines import blosum62_scores
from .metrics import METRICS, assay_metrics, bootstrap_mean_interval
from .report import model_index_entry, write_report

__all__ = [
    "BASELINE",
    "UNKNOWN_CATEGORY",
    "Assay",
    "AssayData",
    "Layout",
    "evaluate_proteingym",
    "load_layout",
    "proteingym_average",
    "read_assay",
    "select_assays",
]

BASELINE = "BLOSUM62"
UNKNOWN_CATEGORY = "unknown"
SINGLES_REFERENCE_NAMES = ("ProteinGym_reference_DMS_substitutions.csv", "DMS_substitutions.csv")
V1_REFERENCE_NAMES = ("DMS_substitutions.csv", "reference_files/DMS_substitutions.csv")
V1_DMS_FOLDERS = ("DMS_ProteinGym_substitutions", "dms", ".")
STATE_FOLDER = "proteingym_assays"
METRIC_TITLES = {"spearman": "Spearman", "auc": "AUC", "mcc": "MCC", "ndcg": "NDCG", "top_recall": "Top-10% recall"}
YEAR = re.compile(r"(19|20)\d\d")


@dataclass(frozen=True)
class Assay:
    """One DMS assay and its ProteinGym metadata (`cutoff` None: the median of its DMS scores)."""

    name: str
    dms_path: Path
    wild_type: str
    uniprot_id: str
    category: str = UNKNOWN_CATEGORY
    cutoff: float | None = None
    reference_id: str | None = None
    match: str = "none"  # "name", "UniProt+author+year", "reference" (v1) or "none"


@dataclass(frozen=True)
class Layout:
    """The assays of one data folder and how they were found (see the module docstring)."""

    kind: str
    root: Path
    reference: Path | None
    assays: list[Assay] = field(default_factory=list)

    def describe(self) -> str:
        counts = defaultdict(int)
        for assay in self.assays:
            counts[assay.match] += 1
        where = {"singles": "dms/ + wildtypes.fasta", "v1": "ProteinGym v1 reference + DMS folder"}[self.kind]
        text = f"{self.kind} layout ({where}) at {self.root}: {len(self.assays)} assays"
        if self.kind == "singles":
            reference = self.reference.name if self.reference else "no reference file"
            text += (
                f"; metadata from {reference}: {counts['name']} matched by name, "
                f"{counts['UniProt+author+year']} by UniProt entry + author + year, {counts['none']} unmatched "
                "(median cutoff, category unknown)"
            )
        return text


@dataclass(frozen=True)
class AssayData:
    """The mutants of one assay as scored: DMS scores, binary labels and where the labels came from."""

    mutants: list[str]
    scores: list[float]
    labels: list[int]
    cutoff: float | None
    label_source: str
    total_mutants: int


# ---------------------------------------------------------------------------------------------------------------------
# Layouts


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _require_columns(path: Path, columns: list[str], required: Iterable[str]) -> None:
    missing = [name for name in required if name not in columns]
    if missing:
        raise ValueError(
            f"{path} has no column {', '.join(map(repr, missing))}; its columns are {', '.join(map(repr, columns))}"
        )


def _uniprot_of(name: str) -> str:
    return "_".join(name.split("_")[:2])


def _category_column(columns: list[str]) -> str | None:
    # ProteinGym aggregates by coarse_selection_type; older reference files only have selection_type.
    for column in ("coarse_selection_type", "selection_type"):
        if column in columns:
            return column
    return None


def _cutoff_of(path: Path, row: dict[str, str]) -> float | None:
    text = (row.get("DMS_binarization_cutoff") or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{path}: DMS_binarization_cutoff of {row['DMS_id']!r} is {text!r}, not a number") from None


def read_reference(path: Path) -> dict[str, dict[str, str]]:
    """Rows of a ProteinGym reference CSV by DMS_id (columns checked)."""
    columns, rows = _read_csv(path)
    _require_columns(path, columns, ("DMS_id", "DMS_binarization_cutoff"))
    category = _category_column(columns)
    for row in rows:
        row["_category"] = (row.get(category) or "").strip() if category else ""
    return {row["DMS_id"]: row for row in rows}


def _name_parts(name: str) -> tuple[str, str, str | None, set[str]]:
    """(UniProt entry, first author, year, the other name parts lower-cased) of `UNIPROT_SPECIES_Author_..._Year`."""
    parts = name.split("_")
    years = [part for part in parts[3:] if YEAR.fullmatch(part)]
    year = years[0] if years else None
    rest = {part.lower() for part in parts[3:] if part != year}
    return "_".join(parts[:2]), parts[2] if len(parts) > 2 else "", year, rest


def _qualifiers_agree(ours: set[str], theirs: set[str]) -> bool:
    # `bind` names the same assay as `binding`, `expr` as `expression`.
    return all(any(a.startswith(b) or b.startswith(a) for a in ours) for b in theirs)


def match_reference(name: str, wild_type: str, reference: dict[str, dict[str, str]]) -> tuple[str | None, str]:
    """(reference DMS_id, how it matched) for an assay name, or (None, "none"); see the module docstring."""
    row = reference.get(name)
    if row is not None and row.get("target_seq", wild_type).upper() == wild_type:
        return name, "name"
    uniprot, author, year, rest = _name_parts(name)
    candidates = []
    for dms_id, row in reference.items():
        their_uniprot, their_author, their_year, their_rest = _name_parts(dms_id)
        same_study = (their_uniprot, their_author, their_year) == (uniprot, author, year) and year is not None
        if same_study and _qualifiers_agree(rest, their_rest) and row.get("target_seq", "").upper() == wild_type:
            candidates.append(dms_id)
    if len(candidates) == 1:
        return candidates[0], "UniProt+author+year"
    return None, "none"


def _singles_assay(name: str, path: Path, wild_type: str, reference: dict[str, dict[str, str]]) -> Assay:
    reference_id, how = match_reference(name, wild_type, reference)
    if reference_id is None:
        return Assay(name=name, dms_path=path, wild_type=wild_type, uniprot_id=_uniprot_of(name))
    row = reference[reference_id]
    return Assay(
        name=name,
        dms_path=path,
        wild_type=wild_type,
        uniprot_id=row.get("UniProt_ID") or _uniprot_of(name),
        category=row["_category"] or UNKNOWN_CATEGORY,
        cutoff=_cutoff_of(path, row),
        reference_id=reference_id,
        match=how,
    )


def _read_wild_types(path: Path) -> dict[str, str]:
    wild_types = {}
    for record in read_fasta(path):
        name = record.id.removesuffix(".csv")
        if name in wild_types:
            raise ValueError(f"{path} has two records for {record.id!r}")
        wild_types[name] = record.sequence.upper()
    return wild_types


def _load_singles(root: Path, reference_path: Path | None) -> Layout:
    if reference_path is None:
        reference_path = next((root / n for n in SINGLES_REFERENCE_NAMES if (root / n).is_file()), None)
    reference = read_reference(reference_path) if reference_path else {}
    wild_types = _read_wild_types(root / "wildtypes.fasta")
    assays = []
    for path in sorted((root / "dms").glob("*.csv")):
        if path.stem not in wild_types:
            raise ValueError(f"{root / 'wildtypes.fasta'} has no record {path.name!r} for the assay {path}")
        assays.append(_singles_assay(path.stem, path, wild_types[path.stem], reference))
    if not assays:
        raise ValueError(f"{root / 'dms'} holds no <assay>.csv files")
    return Layout(kind="singles", root=root, reference=reference_path, assays=assays)


def _v1_assay(reference_path: Path, dms_dir: Path, row: dict[str, str]) -> Assay:
    wild_type = row["target_seq"].strip().upper()
    if not wild_type:
        raise ValueError(f"{reference_path}: target_seq of {row['DMS_id']!r} is empty")
    return Assay(
        name=row["DMS_id"],
        dms_path=dms_dir / row["DMS_filename"],
        wild_type=wild_type,
        uniprot_id=row.get("UniProt_ID") or _uniprot_of(row["DMS_id"]),
        category=row["_category"] or UNKNOWN_CATEGORY,
        cutoff=_cutoff_of(reference_path, row),
        reference_id=row["DMS_id"],
        match="reference",
    )


def _load_v1(root: Path, reference_path: Path | None, dms_dir: Path | None) -> Layout:
    if reference_path is None:
        found = [root / name for name in V1_REFERENCE_NAMES if (root / name).is_file()]
        if not found:
            raise ValueError(
                f"{root} is neither a singles layout (dms/ and wildtypes.fasta) nor a ProteinGym v1 one (no "
                f"{' or '.join(V1_REFERENCE_NAMES)}); give the reference file with --reference"
            )
        reference_path = found[0]
    columns, _ = _read_csv(reference_path)
    _require_columns(reference_path, columns, ("DMS_id", "DMS_filename", "target_seq", "DMS_binarization_cutoff"))
    if dms_dir is None:
        dms_dir = next(root / name for name in V1_DMS_FOLDERS if (root / name).is_dir())
    reference = read_reference(reference_path)
    assays = [_v1_assay(reference_path, dms_dir, row) for row in reference.values()]
    return Layout(kind="v1", root=root, reference=reference_path, assays=assays)


def load_layout(
    data: str | os.PathLike[str], reference: str | os.PathLike[str] | None = None, dms_dir: str | None = None
) -> Layout:
    """The assays under `data`: the singles layout when it has `dms/` and `wildtypes.fasta`, else ProteinGym v1
    (`reference` or `data/DMS_substitutions.csv`, DMS files in `dms_dir` or `data/DMS_ProteinGym_substitutions`)."""
    root = Path(data)
    if not root.is_dir():
        raise OSError(f"ProteinGym data folder {root} does not exist")
    reference_path = Path(reference) if reference is not None else None
    if reference_path is not None and not reference_path.is_file():
        raise OSError(f"reference file {reference_path} does not exist")
    if (root / "dms").is_dir() and (root / "wildtypes.fasta").is_file() and dms_dir is None:
        return _load_singles(root, reference_path)
    return _load_v1(root, reference_path, Path(dms_dir) if dms_dir is not None else None)


def select_assays(layout: Layout, patterns: Sequence[str] | None) -> list[Assay]:
    """The assays whose name matches one of `patterns` (names or shell globs), in layout order; all for None."""
    if not patterns:
        return list(layout.assays)
    names = [assay.name for assay in layout.assays]
    for pattern in patterns:
        if not fnmatch.filter(names, pattern.removesuffix(".csv")):
            raise ValueError(f"--assays {pattern!r} matches none of the {len(names)} assays (e.g. {names[0]})")
    return [a for a in layout.assays if any(fnmatch.fnmatchcase(a.name, p.removesuffix(".csv")) for p in patterns)]


# ---------------------------------------------------------------------------------------------------------------------
# Reading one assay


def _number(path: Path, line: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{path}, line {line}: column {column!r} is {text!r}, not a finite number")
    return value


def _label(path: Path, line: int, text: str) -> int:
    value = _number(path, line, "DMS_score_bin", text)
    if value not in (0.0, 1.0):
        raise ValueError(f"{path}, line {line}: DMS_score_bin is {text!r}; it must be 0 or 1")
    return int(value)


def _subset(count: int, limit: int | None, seed: int) -> list[int]:
    """Row indices kept: all, or a seeded random `limit` of them in file order (a quick, not comparable, run)."""
    if limit is None or count <= limit:
        return list(range(count))
    return sorted(random.Random(seed).sample(range(count), limit))


def read_assay(assay: Assay, max_mutants: int | None = None, seed: int = 0) -> AssayData:
    """The mutants, DMS scores and labels of `assay`, every mutant checked against the wild type (ValueError naming
    the file, line and mutant). The median cutoff is over all of the assay's scores, before any subset is taken."""
    path = assay.dms_path
    if not path.is_file():
        raise OSError(f"DMS file {path} of the assay {assay.name} does not exist")
    columns, rows = _read_csv(path)
    _require_columns(path, columns, ("mutant",))
    score_column = next((name for name in ("DMS_score", "score") if name in columns), None)
    if score_column is None:
        raise ValueError(
            f"{path} has no score column 'DMS_score' or 'score'; its columns are {', '.join(map(repr, columns))}"
        )
    if not rows:
        raise ValueError(f"{path} has no mutants")
    scores = [_number(path, line, score_column, row[score_column]) for line, row in enumerate(rows, start=2)]
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            parse_mutations(row["mutant"], assay.wild_type)
        except ValueError as error:
            raise ValueError(f"{path}, line {line}: {error}") from error
    if "DMS_score_bin" in columns:
        labels = [_label(path, line, row["DMS_score_bin"]) for line, row in enumerate(rows, start=2)]
        cutoff, source = assay.cutoff, "DMS_score_bin column"
    else:
        cutoff = assay.cutoff if assay.cutoff is not None else float(np.median(scores))
        source = "reference cutoff" if assay.cutoff is not None else "median of the DMS scores"
        labels = [int(score >= cutoff) for score in scores]
    kept = _subset(len(rows), max_mutants, seed)
    return AssayData(
        mutants=[rows[i]["mutant"] for i in kept],
        scores=[scores[i] for i in kept],
        labels=[labels[i] for i in kept],
        cutoff=cutoff,
        label_source=source,
        total_mutants=len(rows),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Scoring with resume


def _write_json_atomically(path: Path, record: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(record) + "\n")
    os.replace(partial, path)  # a crash leaves the old file or none, never half of one


def _state_path(output_dir: Path, assay: Assay, scorer: str) -> Path:
    return output_dir / STATE_FOLDER / f"{assay.name}.{scorer}.json"


def _settings(scorer: str, model_name: str, window: int, data: AssayData, max_mutants: int | None, seed: int):
    """What a recorded result depends on: a rerun reuses it only when all of these are the same."""
    settings = {"scorer": scorer, "mutants": len(data.mutants), "max_mutants_per_assay": max_mutants}
    if max_mutants is not None:
        settings["seed"] = seed
    if scorer != BASELINE:
        settings.update(model=model_name, window=window)
    return settings


def _load_state(path: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("settings") != settings:
        raise ValueError(
            f"{path} was scored with other settings ({record.get('settings')}, now {settings}); use another "
            "--output-dir, or delete that folder to score again"
        )
    return record


def _score(scorer: str, assay: Assay, data: AssayData, model, tokenizer, window, batch_size, progress) -> list[float]:
    if scorer == BASELINE:
        return blosum62_scores(assay.wild_type, data.mutants)
    try:
        return score_variants(
            model,
            tokenizer,
            assay.wild_type,
            data.mutants,
            method=scorer,
            batch_size=batch_size,
            progress=progress,
            window=window,
        )
    except ValueError as error:
        raise ValueError(f"{assay.dms_path}: {error}") from error


def _assay_result(assay: Assay, data: AssayData, scorer: str, scores: list[float], seconds: float) -> dict[str, Any]:
    return {
        "assay": assay.name,
        "scorer": scorer,
        "category": assay.category,
        "uniprot_id": assay.uniprot_id,
        "mutants": len(data.mutants),
        "metrics": assay_metrics(data.scores, data.labels, scores),
        "seconds": seconds,
        "scores": scores,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Aggregation and tables


def _mean(values: Iterable[float]) -> float:
    kept = [value for value in values if value is not None and math.isfinite(value)]
    return float(np.mean(kept)) if kept else math.nan


def proteingym_average(results: list[dict[str, Any]], metric: str) -> tuple[float, dict[str, float]]:
    """ProteinGym's average of `metric` over per-assay `results` of one scorer, and the per-category values: the mean
    per (UniProt entry, category), then per category, then over the categories ("unknown" only if nothing else)."""
    by_protein = defaultdict(list)
    for result in results:
        by_protein[(result["category"], result["uniprot_id"])].append(result["metrics"][metric])
    by_category = defaultdict(list)
    for (category, _), values in by_protein.items():
        by_category[category].append(_mean(values))
    categories = {category: _mean(values) for category, values in sorted(by_category.items())}
    known = [value for category, value in categories.items() if category != UNKNOWN_CATEGORY]
    return _mean(known if known else categories.values()), categories


def _interval_text(interval: dict[str, float]) -> str:
    if not math.isfinite(interval["low"]):
        return "n/a"
    return f"[{interval['low']:.3f}, {interval['high']:.3f}]"


def _summary_row(scorer: str, results: list[dict[str, Any]], seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    row: dict[str, Any] = {"scorer": scorer, "assays": len(results)}
    for metric in METRICS:
        row[METRIC_TITLES[metric]] = proteingym_average(results, metric)[0]
    spearmans = [result["metrics"]["spearman"] for result in results]
    interval = bootstrap_mean_interval(spearmans, seed=seed)
    row["Spearman, mean over assays"] = _mean(spearmans)
    row["95% CI of that mean"] = _interval_text(interval)
    return row, interval


def _category_rows(scorer: str, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    per_metric = {metric: proteingym_average(results, metric)[1] for metric in METRICS}
    counts = defaultdict(int)
    for result in results:
        counts[result["category"]] += 1
    return [
        {
            "category": category,
            "scorer": scorer,
            "assays": counts[category],
            **{METRIC_TITLES[metric]: per_metric[metric][category] for metric in METRICS},
        }
        for category in per_metric["spearman"]
    ]


def _assay_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "assay": result["assay"],
            "category": result["category"],
            "mutants": result["mutants"],
            "scorer": result["scorer"],
            **{METRIC_TITLES[metric]: result["metrics"][metric] for metric in METRICS},
        }
        for result in results
    ]


def _model_index(summary: list[dict[str, Any]], methods: list[str], dataset_name: str) -> list[dict[str, Any]]:
    entries = []
    for row in summary:
        if row["scorer"] not in methods:
            continue
        for metric in METRICS:
            value = row[METRIC_TITLES[metric]]
            if not math.isfinite(value):
                continue
            entries.append(
                model_index_entry(
                    task="zero-shot-variant-effect",
                    task_name=f"Zero-shot variant effects ({row['scorer']})",
                    dataset="proteingym-substitutions",
                    dataset_name=dataset_name,
                    dataset_split="test",
                    metric=metric,
                    metric_name=f"{METRIC_TITLES[metric]} (ProteinGym average over function categories)",
                    value=value,
                )
            )
    return entries


def _dataset_name(layout: Layout, assays: list[Assay], max_mutants: int | None) -> str:
    name = f"ProteinGym DMS substitutions ({len(assays)} assays"
    if len(assays) < len(layout.assays):
        name = f"ProteinGym DMS substitutions ({len(assays)} of {len(layout.assays)} assays"
    if max_mutants is not None:
        name += f", at most {max_mutants} mutants each: not comparable"
    return name + ")"


def _timing(results: list[dict[str, Any]], scorers: list[str]) -> dict[str, dict[str, float]]:
    timing = {}
    for scorer in scorers:
        mine = [result for result in results if result["scorer"] == scorer]
        mutants, seconds = sum(r["mutants"] for r in mine), sum(r["seconds"] for r in mine)
        timing[scorer] = {"mutants": mutants, "seconds": seconds, "ms_per_mutant": 1000 * seconds / max(mutants, 1)}
    return timing


def _assay_details(assay: Assay, data: AssayData) -> dict[str, Any]:
    return {
        "assay": assay.name,
        "dms_file": str(assay.dms_path),
        "category": assay.category,
        "uniprot_id": assay.uniprot_id,
        "reference_id": assay.reference_id,
        "reference_match": assay.match,
        "cutoff": data.cutoff,
        "labels": data.label_source,
        "mutants_scored": len(data.mutants),
        "mutants_in_file": data.total_mutants,
        "wild_type_length": len(assay.wild_type),
    }


# ---------------------------------------------------------------------------------------------------------------------
# The benchmark


@dataclass
class ProteinGymRun:
    """What `evaluate_proteingym` did: the tables it wrote, the files, and how many results were scored or reused."""

    tables: dict[str, tuple[list[dict[str, Any]], list[str]]]
    paths: dict[str, Path]
    scored: int
    reused: int
    results: list[dict[str, Any]]


def _check_methods(methods: str | Sequence[str]) -> list[str]:
    methods = [methods] if isinstance(methods, str) else list(dict.fromkeys(methods))
    for method in methods:
        if method not in VARIANT_METHODS:
            raise ValueError(f"method must be one of {', '.join(VARIANT_METHODS)}; got {method!r}")
    if not methods:
        raise ValueError("give at least one method")
    return methods


def _run_assays(assays, scorers, output_dir, model, tokenizer, options) -> tuple[list, list, int]:
    """Score (or reuse) every (assay, scorer); returns the results, the per-assay details and how many were scored."""
    missing = [assay for assay in assays if not assay.dms_path.is_file()]
    if missing:
        names = ", ".join(assay.dms_path.name for assay in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise OSError(
            f"{len(missing)} of the {len(assays)} assays have no DMS file in {missing[0].dms_path.parent} ({names}); "
            "choose the assays to run with --assays"
        )
    datas = [read_assay(assay, options["max_mutants"], options["seed"]) for assay in assays]  # all checked first
    (output_dir / STATE_FOLDER).mkdir(parents=True, exist_ok=True)
    total = sum(len(data.mutants) for data in datas) * len(scorers)
    bar = tqdm(total=total, desc="ProteinGym", unit="mutant", disable=not options["progress"], dynamic_ncols=True)
    results, scored = [], 0
    for number, (assay, data) in enumerate(zip(assays, datas), start=1):
        for scorer in scorers:
            bar.set_description(f"assay {number}/{len(assays)} {assay.name} ({scorer})")
            path = _state_path(output_dir, assay, scorer)
            settings = _settings(scorer, options["model_name"], options["window"], data, **options["subset"])
            record = _load_state(path, settings)
            if record is None:
                started = time.perf_counter()
                scores = _score(scorer, assay, data, model, tokenizer, **options["scoring"])
                record = {
                    "settings": settings,
                    **_assay_result(assay, data, scorer, scores, time.perf_counter() - started),
                }
                _write_json_atomically(path, record)
                scored += 1
            results.append(record)
            bar.update(len(data.mutants))
    bar.close()
    return results, [_assay_details(assay, data) for assay, data in zip(assays, datas)], scored


def evaluate_proteingym(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    layout: Layout,
    methods: str | Sequence[str],
    output_dir: str | os.PathLike[str],
    *,
    model_name: str | None = None,
    assays: Sequence[str] | None = None,
    max_mutants_per_assay: int | None = None,
    window: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
    progress: bool = True,
) -> ProteinGymRun:
    """Score every selected assay of `layout` with each of `methods` (`scoring.VARIANT_METHODS`) and BLOSUM62,
    compute ProteinGym's metrics and aggregation, and write `proteingym_results.{json,md}` and
    `proteingym_model_index.json` to `output_dir` (see the module docstring for the layouts, labels, aggregation
    and resume). `assays`: names or globs; `max_mutants_per_assay`: a seeded random subset per assay, for quick
    runs whose numbers are not comparable to ProteinGym's; `window`: residues per window (default: the context).
    """
    methods = _check_methods(methods)
    model_name = model_name or str(getattr(model.config, "_name_or_path", "") or type(model).__name__)
    selected = select_assays(layout, assays)
    output_dir = Path(output_dir)
    options = {
        "model_name": model_name,
        "window": window_residues(model, window),
        "max_mutants": max_mutants_per_assay,
        "seed": seed,
        "progress": progress,
        "subset": {"max_mutants": max_mutants_per_assay, "seed": seed},
        "scoring": {"window": window, "batch_size": batch_size, "progress": progress},
    }
    scorers = [*methods, BASELINE]
    results, assay_details, scored = _run_assays(selected, scorers, output_dir, model, tokenizer, options)
    summary, intervals = [], {}
    for scorer in scorers:
        row, intervals[scorer] = _summary_row(scorer, [r for r in results if r["scorer"] == scorer], seed)
        summary.append(row)
    categories = [
        row for scorer in scorers for row in _category_rows(scorer, [r for r in results if r["scorer"] == scorer])
    ]
    categories.sort(key=lambda row: row["category"])
    metric_columns = [METRIC_TITLES[metric] for metric in METRICS]
    tables = {
        "Summary (ProteinGym aggregation)": (
            summary,
            ["scorer", "assays", *metric_columns, "Spearman, mean over assays", "95% CI of that mean"],
        ),
        "By function category": (categories, ["category", "scorer", "assays", *metric_columns]),
        "Per assay": (_assay_rows(results), ["assay", "category", "mutants", "scorer", *metric_columns]),
    }
    details = {
        "layout": layout.describe(),
        "reference": str(layout.reference) if layout.reference else None,
        "methods": methods,
        "window": options["window"],
        "max_mutants_per_assay": max_mutants_per_assay,
        "comparable_to_proteingym": max_mutants_per_assay is None,
        "seed": seed,
        "bootstrap_spearman_mean_over_assays": intervals,
        "timing": _timing(results, scorers),
        "assays": assay_details,
    }
    dataset_name = _dataset_name(layout, selected, max_mutants_per_assay)
    paths = write_report(
        output_dir,
        benchmark="proteingym",
        model=model_name,
        tables=tables,
        model_index=_model_index(summary, methods, dataset_name),
        details=details,
    )
    return ProteinGymRun(tables=tables, paths=paths, scored=scored, reused=len(results) - scored, results=results)
