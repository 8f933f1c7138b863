"""Identity: principal ids, API keys, passwords, the in-memory directory and the stores."""
