"""transformers pipelines for protein LMs, registered with transformers' pipeline registry on import.

pipeline("protein-embedding", model=...)    per-residue and pooled embeddings (embedding.py)
pipeline("protein-generation", model=...)   sampling with the KV cache (generation.py)
pipeline("protein-infilling", model=...)    GLM span infilling, `MKT<smask>LV` (generation.py)
pipeline("protein-scoring", model=...)      likelihoods and variant effects (scoring.py)
"""

from . import embedding, generation, scoring  # noqa: F401  (importing registers the tasks)
from .embedding import ProteinEmbeddingPipeline, embed_fasta, embed_sequences, load_embeddings
from .generation import ProteinGenerationPipeline, ProteinInfillingPipeline, generate_sequences, infill_sequences
from .scoring import (
    ProteinScoringPipeline,
    causal_log_likelihood,
    masked_marginals,
    pseudo_log_likelihood,
    score_variants,
)

__all__ = [
    "ProteinEmbeddingPipeline",
    "ProteinGenerationPipeline",
    "ProteinInfillingPipeline",
    "ProteinScoringPipeline",
    "causal_log_likelihood",
    "embed_fasta",
    "embed_sequences",
    "generate_sequences",
    "infill_sequences",
    "load_embeddings",
    "masked_marginals",
    "pseudo_log_likelihood",
    "score_variants",
]
