"""Ingest: catalog files (CSV/JSONL/Parquet) and the public datasets into validated `Product`s and interaction
frames; every bad row is reported by row number. Calls no model."""
