"""Test-wide settings.

Under CI (``CI=true``) hypothesis runs derandomized: the same examples every run, so a red CI
always means a changed program, never a newly drawn input. Locally it keeps exploring.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
