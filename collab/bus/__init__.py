"""collab.bus"""
