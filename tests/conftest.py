"""Hypothesis profiles for tests/test_fuzz.py: ``ci`` (the default, a few seconds per test) and
``long`` for a deeper local run: ``pytest tests/test_fuzz.py --hypothesis-profile long``."""

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("long", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.load_profile("ci")
