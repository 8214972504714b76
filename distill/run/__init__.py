"""Running the pipeline: run folders and their state (`state`), the stage sequence (`pipeline`), the nightly
incremental run (`nightly`) and the provider batch export/import cycle (`batch`)."""
