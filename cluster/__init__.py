"""S4 package."""
