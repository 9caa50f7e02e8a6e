"""collab.domain"""
