"""Shared pytest settings: hypothesis runs derandomized in CI (the same examples every run, so a
CI result can be reproduced), with its usual random search elsewhere. HYPOTHESIS_PROFILE picks a
profile by name."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))
