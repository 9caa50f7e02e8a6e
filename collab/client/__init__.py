"""collab.client"""
