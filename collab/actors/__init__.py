"""collab.actors"""
