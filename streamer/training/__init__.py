"""Offline training and evaluation on clip folders, read through the live path."""
