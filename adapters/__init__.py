"""Method adapters: one module (or package) per method, plus the small reference methods."""
