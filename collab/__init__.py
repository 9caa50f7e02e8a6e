"""Collab: a realtime collaboration server for task management."""

__version__ = "0.1.0"
