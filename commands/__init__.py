"""Typer sub-commands of the `nlpkit` CLI: thin wrappers that parse, call nlpkit, print."""
