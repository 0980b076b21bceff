"""Soak runs (`make soak`): minutes of real servers under faults, printed as tables."""
