"""Evidence that needs no model: co-purchase statistics, text embeddings (a `TextEncoder`), and the catalog's
hybrid retriever (BM25 + embeddings) that grounds phrases and measures text similarity."""
