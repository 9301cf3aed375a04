"""Data set generators that write clips in the generic training format (see DESIGN.md)."""
