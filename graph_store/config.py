"""What a store needs from the settings, as a Protocol: `distill.settings.DistillSettings` satisfies it, and
`graph_store` stays importable without `distill` (the distiller writes through the stores, the server reads)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from pydantic import SecretStr


class StoreSettings(Protocol):
    """The read-only fields `open_store` and `Neo4jStore.from_settings` use."""

    @property
    def store(self) -> Literal["embedded", "neo4j"]: ...

    @property
    def keep_versions(self) -> int: ...

    @property
    def embedded_store_dir(self) -> Path: ...

    @property
    def neo4j_uri(self) -> str: ...

    @property
    def neo4j_user(self) -> str: ...

    @property
    def neo4j_password(self) -> SecretStr: ...

    @property
    def neo4j_database(self) -> str | None: ...

    @property
    def neo4j_batch_size(self) -> int: ...
