"""The HTTP edge: request and response models, error mapping, wiring of real services."""
