"""Generated gRPC stubs of proto/distillguard/v1/scorer.proto (`make proto`; never edited).

Import them through `distillguard.serving.stubs`, which (re)generates them when they are
missing or older than the .proto.
"""
