"""A provider's batch endpoints (OpenAI /v1/files + /v1/batches and compatible): upload a batch input file,
create a batch, poll it, find it by its input file, download its output and error files. Mixed into
`LLMGateway`; imports no litellm (each call goes through the gateway's `_provider_request`, which makes the
litellm call, retries it and translates its errors).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_DONE = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(frozen=True)
class ProviderBatch:
    """A provider batch as the gateway sees it (litellm's batch object, read at the seam)."""

    id: str
    status: str
    """validating, in_progress, finalizing, completed, failed, expired, cancelling or cancelled."""
    input_file_id: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    errors: tuple[str, ...] = ()
    """The provider's reasons when the whole batch failed (validation, quota)."""

    @property
    def done(self) -> bool:
        return self.status in _DONE


def provider_batch(batch: Any) -> ProviderBatch:
    counts = getattr(batch, "request_counts", None)
    errors = getattr(getattr(batch, "errors", None), "data", None) or []
    return ProviderBatch(
        id=str(batch.id), status=str(batch.status), input_file_id=str(batch.input_file_id),
        output_file_id=batch.output_file_id or None, error_file_id=batch.error_file_id or None,
        total=int(getattr(counts, "total", 0) or 0), completed=int(getattr(counts, "completed", 0) or 0),
        failed=int(getattr(counts, "failed", 0) or 0),
        errors=tuple(f"{getattr(e, 'code', None) or 'error'}: {getattr(e, 'message', None) or ''}" for e in errors),
    )


class ProviderBatches:
    """The provider-batch half of LLMGateway (the gateway defines `_provider_request`)."""

    def _provider_request(self, what: str, function: str, **kwargs: Any) -> Any:
        raise NotImplementedError

    def upload_batch_file(self, path: Path) -> str:
        """Upload a batch input JSONL (export_batch's file) to the primary model's provider; returns the file id."""
        with Path(path).open("rb") as handle:
            return str(self._provider_request(f"uploading {Path(path).name}", "create_file", file=handle,
                                              purpose="batch").id)

    def create_batch(self, input_file_id: str, *, metadata: dict[str, str] | None = None) -> ProviderBatch:
        """Start a batch over an uploaded file (24 h window, chat completions)."""
        return provider_batch(self._provider_request(
            f"creating a batch over {input_file_id}", "create_batch", completion_window="24h",
            endpoint="/v1/chat/completions", input_file_id=input_file_id, metadata=metadata))

    def retrieve_batch(self, batch_id: str) -> ProviderBatch:
        return provider_batch(self._provider_request(f"polling batch {batch_id}", "retrieve_batch", batch_id=batch_id))

    def find_batch(self, input_file_id: str) -> ProviderBatch | None:
        """The provider's batch over `input_file_id`, if one was created (a kill between create and saving its
        id leaves only the file id; asking avoids paying for the same requests twice)."""
        page = self._provider_request("listing batches", "list_batches", limit=100)
        for item in getattr(page, "data", None) or []:
            if getattr(item, "input_file_id", None) == input_file_id:
                return provider_batch(item)
        return None

    def download_batch_file(self, file_id: str, path: Path) -> Path:
        """Write a batch output or error file to `path` (atomically: a kill leaves no half file)."""
        data = self._provider_request(f"downloading {file_id}", "file_content", file_id=file_id).content
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".part")
        partial.write_bytes(data)
        os.replace(partial, path)
        return path
