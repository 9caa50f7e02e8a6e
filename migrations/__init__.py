"""Numbered SQL migrations, shipped inside the package as collab.migrations."""
