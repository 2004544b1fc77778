"""Runnable demos built on the CLI verbs (make retrain-demo)."""
