"""Fixture plugin whose import fails, as a plugin with a missing dependency would."""

import twinfold_missing_dependency_xyz  # noqa: F401
