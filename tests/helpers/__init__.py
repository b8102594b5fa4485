"""Helpers the tests share (and that the labs copy into their guests)."""
