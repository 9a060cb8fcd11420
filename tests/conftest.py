import os

os.environ.setdefault(
    "DPT_CONTRACTS", "1"
)  # check deal contracts in every test (off in production)

from hypothesis import HealthCheck, settings

pytest_plugins = ["dpt_core.testing"]

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "dev",
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
