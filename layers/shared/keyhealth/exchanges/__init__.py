"""Exchange adapters: one module per exchange, sharing `base`."""
