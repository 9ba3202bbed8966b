"""Execution: plan a recipe into content-addressed stages, run the missing ones into the store."""
