"""Shelby: an event-sourced coordinator for ML training jobs on a pool of compute nodes."""

__version__ = "0.1.0"
