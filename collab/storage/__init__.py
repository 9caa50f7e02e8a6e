"""collab.storage"""
