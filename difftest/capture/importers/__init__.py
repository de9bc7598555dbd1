"""Importers of foreign captures: tracefs / trace-cmd text, pKVM's vmexit_trace."""
