"""The pipeline stages, one module each (rank is a package): each is a function over typed inputs with one
output; `common` holds what the model-facing stages share. Stages never read or write the run folder."""
