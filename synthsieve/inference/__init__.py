"""Model specs, ModelHandlers and the interpretation of model outputs."""
