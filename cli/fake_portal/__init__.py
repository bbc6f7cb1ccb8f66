"""A fake Bitrix24 portal for the tests, the benchmarks and `make run` (see server.py)."""

from cli.fake_portal.server import FakePortal, LeakyBucket, Stats

__all__ = ["FakePortal", "LeakyBucket", "Stats"]
