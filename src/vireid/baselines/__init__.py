"""Simple non-learned baselines the toolkit reports next to trained models."""

from vireid.baselines.color_histogram import color_histogram_features, random_features

__all__ = ["color_histogram_features", "random_features"]
