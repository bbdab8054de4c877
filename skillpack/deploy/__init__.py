"""Deployment: compression, export, release, promotion, the service and its monitoring."""
