"""Prefect flows: they orchestrate the DVC stages; the stages themselves never import Prefect."""
