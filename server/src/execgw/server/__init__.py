"""execgw-server: the execution gateway."""
