"""Integrations with other frameworks. Import the submodule you need (its framework is then imported)."""
