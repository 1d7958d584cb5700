"""recsys-embed: multiplexed and pruned embedding tables for recommender systems."""

__version__ = "0.1.0"
