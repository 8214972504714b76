"""Offline distillation: catalog -> candidates -> LLM -> validated relations -> published graph version.

Importing this package never imports litellm; only `distill.llm.gateway` does, and only when a model is used.
"""
