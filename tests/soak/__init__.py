"""`make soak`: load while processes are killed and servers restarted (python -m tests.soak)."""
