"""Serving (rank 1): the bundle runtime, scorer, session state, gRPC server, gateway
client, batch scoring and replay, and the storage the server writes (event log, labels
store, registry pointers). Imports `distillguard.model` only, never `training`."""
from pathlib import Path

# The shipped model bundle (`make model` rebuilds it; package data in the wheel).
DEFAULT_BUNDLE = Path(__file__).resolve().parent / "default_bundle"
