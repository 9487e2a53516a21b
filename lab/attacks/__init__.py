"""Attacks on the public edge, run against the real stack; each writes a result file
under reliability/ that docs/reliability.md is generated from."""
