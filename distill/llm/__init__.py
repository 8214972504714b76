"""Everything about calling a model: the gateway (the only module that imports litellm), versioned prompts,
answer parsing, the response cache, retries, the budget, rate limits and provider batch files."""
