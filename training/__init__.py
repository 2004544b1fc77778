"""Training (rank 2): the simulator, Lightning data and module, export, calibration
fitting, evaluation, champion vs challenger. Imports `model` and `serving`."""
