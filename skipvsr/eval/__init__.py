"""Evaluation wing: benchmark datasets, the evaluation protocol and its reports."""
