"""Training PE-AG-GMoE: the resumable training loop and its curves."""
