"""Conversation tests: ``msev15 eval`` runs scenario files against a service and reports pass^k."""
