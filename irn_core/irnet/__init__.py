"""irnet."""
