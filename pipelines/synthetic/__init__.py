"""Synthetic data with a known click model: CTR impressions with behaviour histories
(:mod:`.ctr`, the click model in :mod:`.click_model`) and item sequences (:mod:`.seq`)."""
