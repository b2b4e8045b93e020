"""Contact precision from attention maps: how much of a protein's 3-D contact map a model's attention already holds.

Definitions (as ESM's papers define them: Rao et al. 2020, "Transformer protein language models are unsupervised
structure learners"):
- Contact: residues i and j whose C-beta atoms (C-alpha for glycine) are closer than 8 A. A residue without a C-beta
  in the file (a truncated side chain) gets the virtual C-beta of its N, C-alpha and C atoms (trRosetta's formula);
  with those missing too, its C-alpha.
- Ranges by sequence separation |i - j|: short 6-11, medium 12-23, long >= 24.
- Precision at L/k (`precision_at`): of the L // k highest-scoring pairs i < j in the range (L = the chain's
  residues), the fraction that are contacts; when the range holds fewer pairs, the missing ones count as wrong
  (ESM's `compute_precisions` pads the same way). Chains are averaged with equal weight.

Predictors (`evaluate_contacts`):
- "attention + APC": every layer's and head's attention over the residues (`<bos>`/`<eos>` rows and columns
  dropped), symmetrised (A + A^T), corrected by APC (`apc`: A - row sums x column sums / total), then averaged.
- "logistic regression": ESM's approach: an L1-regularised logistic regression over those layers x heads APC maps
  as the features of each pair (|i - j| >= 6), fitted on a fixed set of training chains and tested on the others.
  The training chains are disjoint from the test chains by name and by sequence: a test chain identical in sequence
  to a training chain is left out (counted), and so is a repeat of an earlier test chain's sequence (the copies of a
  homo-oligomer). Pairs are subsampled uniformly to bound memory.
- "contact head": the model's own ESM-2 contact head (`predict_contacts`), when the checkpoint has one.

Structures: PDB files (plain or gzip), first model only, ATOM records and selenomethionine (MSE, read as M); the
first alternate location of each atom. A chain's sequence is that of its residues with a C-alpha, in file order
(`read_pdb_chains`), and is checked against the data set's chains.fasta (`load_structure_set`). Residues missing
from the coordinates are missing from the sequence too, so a chain break joins its two sides.

Attention maps come from eager attention (the backbone switches to it for any call with `output_attentions=True`,
whatever the configured backend), read with the attention the model embeds with (`config.embedding_attention`).
Chains longer than the model's context are skipped and counted.
"""

from __future__ import annotations

import gzip
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.fasta import read_fasta

CONTACT_THRESHOLD = 8.0  # Angstrom, between C-beta atoms (C-alpha for glycine)
RANGES = {"short": (6, 11), "medium": (12, 23), "long": (24, None)}  # sequence separation, both ends included
FRACTIONS = {"P@L": 1, "P@L/2": 2, "P@L/5": 5}
MIN_SEPARATION = 6  # pairs closer in sequence are neither scored nor used to fit the regression
THREE_TO_ONE = {
    "ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C", "GLN": "Q", "GLU": "E", "GLY": "G", "HIS": "H",
    "ILE": "I", "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F", "PRO": "P", "SER": "S", "THR": "T", "TRP": "W",
    "TYR": "Y", "VAL": "V", "MSE": "M", "SEC": "U", "PYL": "O",
}  # fmt: skip
HETATM_RESIDUES = ("MSE",)  # HETATM residues read as part of the chain (chains.fasta reads MSE as M)


# ---------------------------------------------------------------------------------------------------------------------
# Structures
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class ChainStructure:
    """One chain: its residues with a C-alpha, in file order, and one contact atom per residue (N, 3)."""

    name: str  # "file|chain", as chains.fasta names it
    sequence: str
    coordinates: np.ndarray
    virtual_beta: int = 0  # residues whose C-beta was missing and rebuilt from the backbone


def _open_pdb(path: Path):
    with open(path, "rb") as handle:
        is_gzip = handle.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt") if is_gzip else open(path)


def _atom_records(path: Path) -> dict[str, dict[tuple[str, str], dict[str, Any]]]:
    """chain -> (residue number, insertion code) -> {"name": residue name, "atoms": {atom: xyz}}, first model only."""
    chains: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    with _open_pdb(path) as handle:
        for line in handle:
            if line.startswith("ENDMDL"):
                break
            record, residue_name = line[:6], line[17:20].strip()
            if record != "ATOM  " and not (record == "HETATM" and residue_name in HETATM_RESIDUES):
                continue
            try:
                xyz = np.array([float(line[30:38]), float(line[38:46]), float(line[46:54])])
            except ValueError:
                raise ValueError(f"{path}: unreadable coordinates in {line.rstrip()!r}") from None
            residue = chains.setdefault(line[21].strip(), {}).setdefault(
                (line[22:26].strip(), line[26].strip()), {"name": residue_name, "atoms": {}}
            )
            residue["atoms"].setdefault(line[12:16].strip(), xyz)  # the first alternate location wins
    return chains


def virtual_beta(n: np.ndarray, ca: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The ideal C-beta position of a residue from its backbone (trRosetta's constants)."""
    b, c_axis = ca - n, c - ca
    a = np.cross(b, c_axis)
    return -0.58273431 * a + 0.56802827 * b - 0.54067466 * c_axis + ca


def _contact_atom(residue: dict[str, Any]) -> tuple[np.ndarray, bool]:
    """(C-beta, C-alpha for glycine or a virtual C-beta), and whether it was rebuilt."""
    atoms = residue["atoms"]
    if residue["name"] == "GLY":
        return atoms["CA"], False
    if "CB" in atoms:
        return atoms["CB"], False
    if "N" in atoms and "C" in atoms:
        return virtual_beta(atoms["N"], atoms["CA"], atoms["C"]), True
    return atoms["CA"], False


def read_pdb_chains(path: str | Path) -> dict[str, ChainStructure]:
    """Every chain of a PDB file (see the module docstring for what is read), by chain id."""
    path = Path(path)
    chains = {}
    for chain_id, residues in _atom_records(path).items():
        kept = [residue for residue in residues.values() if "CA" in residue["atoms"]]
        if not kept:
            continue
        atoms = [_contact_atom(residue) for residue in kept]
        chains[chain_id] = ChainStructure(
            name=f"{path.name}|{chain_id}",
            sequence="".join(THREE_TO_ONE.get(residue["name"], "X") for residue in kept),
            coordinates=np.stack([xyz for xyz, _ in atoms]),
            virtual_beta=sum(rebuilt for _, rebuilt in atoms),
        )
    return chains


def load_structure_set(data_dir: str | Path, max_chains: int | None = None) -> list[ChainStructure]:
    """The chains listed in `data_dir/chains.fasta` (ids "relative/path.pdb.gz|chain"), parsed from their PDB files
    and checked against the listed sequences; a mismatch raises ValueError naming the file, chain and position."""
    data_dir = Path(data_dir)
    listing = data_dir / "chains.fasta"
    if not listing.is_file():
        raise FileNotFoundError(f"{listing} not found: --data must be a folder with chains.fasta and its PDB files")
    records = list(read_fasta(listing))[:max_chains]
    parsed: dict[str, dict[str, ChainStructure]] = {}
    chains = []
    for record in records:
        file_name, _, chain_id = record.id.partition("|")
        if file_name not in parsed:
            parsed[file_name] = read_pdb_chains(data_dir / file_name)
        chain = parsed[file_name].get(chain_id)
        if chain is None:
            raise ValueError(f"{data_dir / file_name}: no chain {chain_id!r} with C-alpha atoms ({listing})")
        _check_sequence(chain, record.sequence, data_dir / file_name)
        chain.name = record.id
        chains.append(chain)
    return chains


def _check_sequence(chain: ChainStructure, expected: str, path: Path) -> None:
    if chain.sequence == expected:
        return
    position = next((i for i, (a, b) in enumerate(zip(chain.sequence, expected)) if a != b), None)
    position = min(len(chain.sequence), len(expected)) if position is None else position
    raise ValueError(
        f"{path}: chain {chain.name.partition('|')[2]!r} reads as {len(chain.sequence)} residues, chains.fasta lists "
        f"{len(expected)}; they differ from residue {position + 1}"
    )


# ---------------------------------------------------------------------------------------------------------------------
# Maps and metrics
# ---------------------------------------------------------------------------------------------------------------------


def contact_map(coordinates: np.ndarray, threshold: float = CONTACT_THRESHOLD) -> np.ndarray:
    """(L, L) booleans: contact atoms closer than `threshold` Angstrom."""
    distances = np.linalg.norm(coordinates[:, None, :] - coordinates[None, :, :], axis=-1)
    return distances < threshold


def symmetrize(maps: np.ndarray) -> np.ndarray:
    """A + A^T over the last two axes."""
    return maps + np.swapaxes(maps, -1, -2)


def apc(maps: np.ndarray) -> np.ndarray:
    """Average product correction over the last two axes: A_ij - (sum_k A_ik)(sum_k A_kj) / sum_kl A_kl."""
    rows = maps.sum(-1, keepdims=True)
    columns = maps.sum(-2, keepdims=True)
    total = maps.sum((-1, -2), keepdims=True)
    return maps - rows * columns / total


def precision_at(
    scores: np.ndarray, contacts: np.ndarray, min_separation: int, max_separation: int | None, divisor: int
) -> float:
    """Precision of the L // `divisor` top-scoring pairs i < j with min <= j - i <= max (None: no maximum); ranges with
    fewer pairs than that count the missing ones as wrong. NaN when L // divisor is 0."""
    length = scores.shape[0]
    top = length // divisor
    if top == 0:
        return float("nan")
    i, j = np.triu_indices(length, k=min_separation)
    if max_separation is not None:
        keep = j - i <= max_separation
        i, j = i[keep], j[keep]
    order = np.argsort(-scores[i, j], kind="stable")[:top]
    return float(contacts[i[order], j[order]].sum() / top)


def contact_precisions(scores: np.ndarray, contacts: np.ndarray) -> dict[str, float]:
    """{"short P@L": ..., "short P@L/2": ..., ..., "long P@L/5": ...} for one chain."""
    results = {}
    for range_name, (low, high) in RANGES.items():
        for fraction_name, divisor in FRACTIONS.items():
            results[f"{range_name} {fraction_name}"] = precision_at(scores, contacts, low, high, divisor)
    return results


METRIC_NAMES = [f"{range_name} {fraction}" for range_name in RANGES for fraction in FRACTIONS]


# ---------------------------------------------------------------------------------------------------------------------
# Attention maps
# ---------------------------------------------------------------------------------------------------------------------


def backbone_of(model: Any) -> Any:
    """The bare PLM backbone of a head class (or the backbone itself)."""
    return getattr(model, getattr(model, "base_model_prefix", ""), model)


@torch.no_grad()
def attention_maps(model: Any, tokenizer: Any, sequence: str) -> np.ndarray:
    """(layers x heads, L, L) attention probabilities between the residues of `sequence` (special tokens dropped),
    from eager attention with the model's embedding attention (bidirectional, or causal for causal-only models)."""
    from ..inference.context import special_token_layout

    backbone = backbone_of(model)
    leading, trailing = special_token_layout(tokenizer)
    residue_ids = tokenizer([sequence], add_special_tokens=False)["input_ids"][0]
    input_ids = torch.tensor([[*leading, *residue_ids, *trailing]], device=backbone.device)
    outputs = backbone(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        attention_type=getattr(backbone.config, "embedding_attention", "bidirectional"),
        output_attentions=True,
    )
    first, last = len(leading), len(leading) + len(residue_ids)
    maps = torch.stack(outputs.attentions, dim=1)[0, :, :, first:last, first:last]  # (layers, heads, L, L)
    return maps.flatten(0, 1).float().cpu().numpy()


def apc_features(maps: np.ndarray) -> np.ndarray:
    """The regression's features: every map symmetrised and APC-corrected, (maps, L, L)."""
    return apc(symmetrize(maps.astype(np.float64))).astype(np.float32)


@torch.no_grad()
def contact_head_scores(model: Any, tokenizer: Any, sequence: str) -> np.ndarray:
    """The model's ESM-2 contact head on one sequence, (L, L) probabilities."""
    encoded = tokenizer([sequence], return_tensors="pt")
    device = backbone_of(model).device
    return (
        model.predict_contacts(encoded["input_ids"].to(device), encoded["attention_mask"].to(device))[0].cpu().numpy()
    )


def has_contact_head(model: Any) -> bool:
    return hasattr(model, "contact_head") and hasattr(model, "predict_contacts")


# ---------------------------------------------------------------------------------------------------------------------
# Training and test chains
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class ChainSplit:
    """Which chains fit the regression and which are scored, and what was left out and why."""

    train: list[ChainStructure]
    test: list[ChainStructure]
    dropped_same_sequence: list[str] = field(default_factory=list)  # test chains identical to a training chain
    repeated_test_sequences: list[str] = field(default_factory=list)  # later copies of a test chain's sequence
    skipped_too_long: list[str] = field(default_factory=list)


def check_disjoint(train: Sequence[ChainStructure], test: Sequence[ChainStructure]) -> None:
    """Refuse training and test chains that share a name or a sequence, naming the first ones."""
    train_names, train_sequences = {c.name for c in train}, {c.sequence for c in train}
    shared = [c.name for c in test if c.name in train_names or c.sequence in train_sequences]
    if shared:
        raise ValueError(
            f"{len(shared)} test chains share a name or a sequence with a training chain of the contact regression, "
            f"e.g. {shared[:5]}; the training chains must be disjoint from the test chains"
        )


def split_chains(
    chains: Sequence[ChainStructure],
    train_count: int,
    seed: int = 0,
    train_names: Sequence[str] | None = None,
    test_names: Sequence[str] | None = None,
    max_residues: int | None = None,
) -> ChainSplit:
    """Training chains (those named, else `train_count` chains of distinct sequences drawn with `seed`) and test chains
    (those named, which must be disjoint from the training chains by name and sequence, else all the others less those
    identical in sequence to a training chain, each sequence once: a homo-oligomer's copies would weigh it several
    times). Chains over `max_residues` are skipped and listed."""
    too_long = [c.name for c in chains if max_residues is not None and len(c.sequence) > max_residues]
    usable = [c for c in chains if c.name not in set(too_long)]
    train = (
        _named(usable, train_names, "training")
        if train_names is not None
        else _draw_distinct(usable, train_count, seed)
    )
    if test_names is not None:
        test = _named(usable, test_names, "test")
        check_disjoint(train, test)
        return ChainSplit(train, test, skipped_too_long=too_long)
    train_sequences, train_set = {c.sequence for c in train}, {c.name for c in train}
    rest = [c for c in usable if c.name not in train_set]
    dropped = [c.name for c in rest if c.sequence in train_sequences]
    test, repeated, seen = [], [], set()
    for chain in rest:
        if chain.sequence in train_sequences:
            continue
        (repeated if chain.sequence in seen else test).append(chain)
        seen.add(chain.sequence)
    check_disjoint(train, test)
    return ChainSplit(train, test, dropped, [c.name for c in repeated], too_long)


def _named(chains: Sequence[ChainStructure], names: Sequence[str], role: str) -> list[ChainStructure]:
    by_name = {c.name: c for c in chains}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(f"{role} chains not in the data set (or too long for the model): {unknown[:5]}")
    return [by_name[name] for name in names]


def _draw_distinct(chains: Sequence[ChainStructure], count: int, seed: int) -> list[ChainStructure]:
    """`count` chains of distinct sequences in a seeded random order (the first chain of each sequence)."""
    first_of_sequence: dict[str, ChainStructure] = {}
    for chain in chains:
        first_of_sequence.setdefault(chain.sequence, chain)
    distinct = list(first_of_sequence.values())
    if count > len(distinct) - 1:
        raise ValueError(f"{count} training chains leave no test chain: the set has {len(distinct)} distinct sequences")
    order = np.random.default_rng(seed).permutation(len(distinct))[:count]
    return [distinct[index] for index in sorted(order)]


# ---------------------------------------------------------------------------------------------------------------------
# The regression and the run
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContactSettings:
    """How `evaluate_contacts` fits and scores (the command line's options)."""

    train_chains: int = 20
    seed: int = 0
    l1_c: float = 0.15  # our default, not a value tuned by ESM; features are standardised first
    max_train_pairs: int = 100_000
    threshold: float = CONTACT_THRESHOLD
    progress: bool = True


def scored_pairs(length: int) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) of every pair i < j at least `MIN_SEPARATION` apart."""
    return np.triu_indices(length, k=MIN_SEPARATION)


def l1_logistic_regression(c: float) -> Any:
    """Standardised features into an L1-regularised logistic regression (liblinear)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # scikit-learn 1.8 deprecated `penalty` for `l1_ratio`; older versions only know `penalty`.
    if LogisticRegression().get_params().get("penalty") == "deprecated":
        regression = LogisticRegression(C=c, l1_ratio=1.0, solver="liblinear")
    else:
        regression = LogisticRegression(C=c, penalty="l1", solver="liblinear")
    return make_pipeline(StandardScaler(), regression)


def training_pairs(
    model: Any, tokenizer: Any, chains: Sequence[ChainStructure], settings: ContactSettings
) -> tuple[np.ndarray, np.ndarray]:
    """(features (P, layers x heads), contact labels (P,)) of a uniform sample of each training chain's pairs."""
    rng = np.random.default_rng(settings.seed)
    per_chain = max(1, settings.max_train_pairs // max(len(chains), 1))
    features, labels = [], []
    for chain in tqdm(chains, desc="contact regression: training chains", disable=not settings.progress):
        maps = apc_features(attention_maps(model, tokenizer, chain.sequence))
        i, j = scored_pairs(len(chain.sequence))
        if len(i) > per_chain:
            keep = np.sort(rng.choice(len(i), size=per_chain, replace=False))
            i, j = i[keep], j[keep]
        features.append(maps[:, i, j].T)
        labels.append(contact_map(chain.coordinates, settings.threshold)[i, j])
    return np.concatenate(features), np.concatenate(labels)


def fit_contact_regression(features: np.ndarray, labels: np.ndarray, c: float) -> Any:
    """ESM's logistic regression over the APC maps of every layer and head."""
    if labels.all() or not labels.any():
        raise ValueError("the training chains' pairs are all contacts or all non-contacts: use more training chains")
    return l1_logistic_regression(c).fit(features, labels)


def chain_scores(model: Any, tokenizer: Any, chain: ChainStructure, regression: Any | None) -> dict[str, np.ndarray]:
    """Each predictor's (L, L) scores for one chain (only pairs i < j at least `MIN_SEPARATION` apart are read)."""
    features = apc_features(attention_maps(model, tokenizer, chain.sequence))
    scores = {"attention + APC": features.mean(0)}
    if regression is not None:
        i, j = scored_pairs(len(chain.sequence))
        regression_scores = np.full(features.shape[1:], -np.inf)
        regression_scores[i, j] = regression.decision_function(features[:, i, j].T)
        scores["logistic regression"] = regression_scores
    if has_contact_head(model):
        scores["contact head"] = contact_head_scores(model, tokenizer, chain.sequence)
    return scores


def evaluate_contacts(model: Any, tokenizer: Any, split: ChainSplit, settings: ContactSettings) -> dict[str, Any]:
    """Fit the regression on `split.train` (when it has chains) and score every predictor on `split.test`: returns
    {"per_chain": [...], "summary": {predictor: {metric: mean over chains}}, "regression": {...}}."""
    regression, regression_info = None, {"fitted": False}
    if split.train:
        features, labels = training_pairs(model, tokenizer, split.train, settings)
        regression = fit_contact_regression(features, labels, settings.l1_c)
        weights = regression[-1].coef_[0]
        regression_info = {
            "fitted": True,
            "pairs": len(labels),
            "contacts": int(labels.sum()),
            "features": len(weights),
            "nonzero_weights": int(np.count_nonzero(weights)),
            "l1_c": settings.l1_c,
        }
    per_chain = []
    for chain in tqdm(split.test, desc="contacts: test chains", disable=not settings.progress):
        contacts = contact_map(chain.coordinates, settings.threshold)
        scores = chain_scores(model, tokenizer, chain, regression)
        metrics = {name: contact_precisions(value, contacts) for name, value in scores.items()}
        per_chain.append({"chain": chain.name, "length": len(chain.sequence), "metrics": metrics})
    summary = summarize(per_chain)
    return {"per_chain": per_chain, "summary": summary, "regression": regression_info, "settings": settings}


def summarize(per_chain: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each predictor's metrics averaged over chains (equal weight; a NaN, from L // k = 0, is left out)."""
    predictors = per_chain[0]["metrics"] if per_chain else {}
    summary = {}
    for predictor in predictors:
        values = np.array([[chain["metrics"][predictor][m] for m in METRIC_NAMES] for chain in per_chain])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a metric that is NaN for every chain stays NaN
            means = np.nanmean(values, axis=0)
        summary[predictor] = dict(zip(METRIC_NAMES, means.tolist()))
    return summary


# ---------------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------------

DATASET = ("structures", "PDB chains of the shared structures set (foldseek and ESM examples, Theseus families)")


def summary_rows(outcome: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per predictor: the chains scored and the nine precisions."""
    chains = len(outcome["per_chain"])
    rows = [{"predictor": name, "chains": chains, **metrics} for name, metrics in outcome["summary"].items()]
    return rows, ["predictor", "chains", *METRIC_NAMES]


def data_rows(split: ChainSplit, data_dir: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """What was read, what fitted the regression, what was scored and what was left out."""
    rows = [
        {"chains": "training (regression)", "count": len(split.train), "names": ", ".join(c.name for c in split.train)},
        {"chains": "test (scored)", "count": len(split.test), "names": f"from {data_dir}"},
        {
            "chains": "left out: same sequence as a training chain",
            "count": len(split.dropped_same_sequence),
            "names": ", ".join(split.dropped_same_sequence[:10]),
        },
        {
            "chains": "left out: repeats an earlier test chain's sequence",
            "count": len(split.repeated_test_sequences),
            "names": ", ".join(split.repeated_test_sequences[:10]),
        },
        {
            "chains": "skipped: longer than the model's context",
            "count": len(split.skipped_too_long),
            "names": ", ".join(split.skipped_too_long[:10]),
        },
    ]
    return rows, ["chains", "count", "names"]


def model_index_entries(outcome: dict[str, Any]) -> list[dict[str, Any]]:
    """Long-range P@L and P@L/5 of every predictor."""
    from .report import model_index_entry

    entries = []
    for predictor, metrics in outcome["summary"].items():
        for metric in ("long P@L", "long P@L/5"):
            if not np.isfinite(metrics[metric]):
                continue
            entries.append(
                model_index_entry(
                    task="contact-prediction",
                    task_name="Contact prediction from attention",
                    dataset=DATASET[0],
                    dataset_name=DATASET[1],
                    dataset_split="test",
                    metric=metric.replace(" ", "_").replace("@", "_at_").replace("/", "_").lower(),
                    metric_name=f"{metric} ({predictor})",
                    value=metrics[metric],
                )
            )
    return entries


def write_contacts_report(
    output_dir: str | Path, model: str, outcome: dict[str, Any], split: ChainSplit, data_dir: str | Path
) -> dict[str, Path]:
    """contacts_results.json / .md / contacts_model_index.json via `report.write_report`."""
    from .report import write_report

    settings: ContactSettings = outcome["settings"]
    details = {
        "definition": f"C-beta (C-alpha for Gly) distance < {settings.threshold} A; ranges {RANGES}",
        "data_dir": str(data_dir),
        "regression": outcome["regression"],
        "settings": settings.__dict__,
        "train_chains": [c.name for c in split.train],
        "dropped_same_sequence": split.dropped_same_sequence,
        "repeated_test_sequences": split.repeated_test_sequences,
        "skipped_too_long": split.skipped_too_long,
        "per_chain": outcome["per_chain"],
        "caveat": "the experimental sets are family-redundant (globins, LDH, trypsins): a sanity-level benchmark",
    }
    return write_report(
        output_dir,
        benchmark="contacts",
        model=model,
        tables={
            "Contact precision (mean over test chains)": summary_rows(outcome),
            "Chains": data_rows(split, data_dir),
        },
        model_index=model_index_entries(outcome),
        details=details,
    )
