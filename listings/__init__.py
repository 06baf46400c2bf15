"""Listing data: loading the marketplace format, cleaning text and images, categories, splits."""
