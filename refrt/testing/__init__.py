"""Tools for testing other runtimes against refrt (and refrt against others)."""
