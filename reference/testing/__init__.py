"""Test-only helpers of the reference. Nothing in production imports this package."""
