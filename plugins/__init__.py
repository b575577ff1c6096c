"""The built-in components of metabench, one sub-package per kind, each registered through the entry-point group
``metabench`` exactly like a third-party plugin."""
