"""collab.auth"""
