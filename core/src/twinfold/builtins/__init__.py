"""Components shared by several methods, registered through the same hooks as plugins."""
