"""Brute-force references the tests compare nasframe against."""
