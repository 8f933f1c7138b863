"""Rate limiting: GCRA math (``gcra``) and limiters that keep its state."""
