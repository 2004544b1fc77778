"""Benchmarks (`distillguard bench <mode>`, `make bench`): rank 3, on top of serving and training."""
