"""Hardening tests: fuzzing, shutdown under load, fault storms and hostile input, bounded in time."""
