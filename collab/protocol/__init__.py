"""collab.protocol"""
