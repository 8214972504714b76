"""How LLMGateway.arun_many schedules requests: at most `llm_concurrency` in flight, and a new request starts
the moment one ends (a pool of workers pulling from one queue), never in lock-step waves that wait for the
slowest request of a chunk. Driven by a completion function whose calls stay open until the test releases
them, so the assertions count requests instead of timing them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from distill.llm.cache import ResponseCache
from distill.llm.gateway import LLMGateway
from distill.llm.prompts import ChatMessage, RenderedPrompt, data_block
from distill.settings import DistillSettings

# Loop turns given to the gateway after each release: far more than it needs to hand the freed slot to the
# next prompt (a few turns), so a missing start is a scheduling fact, not a race.
SETTLE_TURNS = 50


class Label(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item: str


def make_prompt(item: str) -> RenderedPrompt[Label]:
    return RenderedPrompt(
        name="label", version="1",
        messages=(ChatMessage("system", "Answer with JSON {item}."), ChatMessage("user", data_block({"id": item}))),
        response_model=Label, item_ids=(item,),
    )


class HeldModel:
    """A completion function whose requests stay in flight until `release(item)`; records what started."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.in_flight: set[str] = set()
        self.peak = 0
        self._gates: dict[str, asyncio.Future[None]] = {}

    async def __call__(self, **kwargs: Any) -> dict[str, Any]:
        item = str(json.loads(kwargs["messages"][-1]["content"].split("\n")[1])["id"])
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._gates[item] = gate
        self.started.append(item)
        self.in_flight.add(item)
        self.peak = max(self.peak, len(self.in_flight))
        try:
            await gate
        finally:
            self.in_flight.discard(item)
        content = json.dumps({"item": item})
        return {"choices": [{"message": {"content": content}}], "usage": {"prompt_tokens": 5, "completion_tokens": 5}}

    def release(self, item: str) -> None:
        self._gates[item].set_result(None)


async def settle() -> None:
    for _ in range(SETTLE_TURNS):
        await asyncio.sleep(0)


def test_a_new_request_starts_as_soon_as_one_ends_and_never_more_than_the_limit(tmp_path: Path) -> None:
    limit, items = 3, [f"p{i}" for i in range(8)]
    settings = DistillSettings(llm_model="openai/fake-model", data_dir=tmp_path, llm_concurrency=limit)
    model = HeldModel()
    gateway = LLMGateway(settings, ResponseCache(settings.cache_path), completion_fn=model)

    async def drive() -> list[Any]:
        run = asyncio.create_task(gateway.arun_many([make_prompt(i) for i in items], stage="s", progress=False))
        await settle()
        assert sorted(model.started) == items[:limit] and len(model.in_flight) == limit  # the limit, not one more
        for done in range(len(items)):
            oldest = model.started[done]
            model.release(oldest)
            await settle()
            # The freed slot was refilled while the other requests of its "wave" are still open: pipelined.
            expected = min(len(items), limit + done + 1)
            assert len(model.started) == expected, f"after {done + 1} answers {model.started} started"
            assert len(model.in_flight) == min(limit, len(items) - done - 1)
        return await run

    results = asyncio.run(drive())
    assert model.peak == limit
    assert [r.value.item for r in results] == items
    assert gateway.usage("s").calls == len(items)
