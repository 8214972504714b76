"""Fixed limits of the search endpoint, shared by `serve.explore` (which enforces them) and `serve.openapi`
(which documents them), so the document cannot drift from the code and openapi need not import explore."""

from typing import Final

MAX_QUERY: Final = 200
DEFAULT_SEARCH_K: Final = 10
MAX_SEARCH_K: Final = 50
