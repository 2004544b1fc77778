"""Model (rank 0): event schema and readers, sessions, frame signatures, the one feature
code path, windows and the network. Pure numpy/pyarrow/torch: imports no other
distillguard folder, nor Lightning, gRPC or onnxruntime."""
