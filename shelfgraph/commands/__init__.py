"""The `shelfgraph` commands by concern; `shelfgraph.cli` builds the app from them."""
