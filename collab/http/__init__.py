"""collab.http"""
