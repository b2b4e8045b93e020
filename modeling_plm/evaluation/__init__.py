"""Evaluation on the benchmarks the field uses: ProteinGym zero-shot variant effects (`proteingym`), frozen-embedding
probes (`probe`) and contact precision from attention maps (`contacts`). Each writes a JSON record, a Markdown table
and model-index entries for `plm export --eval-results` through `report.write_report`."""
