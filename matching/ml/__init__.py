"""The matcher on plain arrays: features, model, training and evaluation. No Django imports."""
