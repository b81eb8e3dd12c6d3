"""The gRPC layer: thin servicers that translate messages and call the core."""
