"""Traces on disk: the schema, Arrow columns, validation, the one row decoder, atomic reading and writing, the builder."""
