"""Scan results: the streaming ``.nessus`` parser, authentication validation, findings
queries, scan diffs and the offline ``results`` CLI."""
