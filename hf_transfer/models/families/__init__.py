"""Architecture-specific fixes, one module per model family (`efficientnet`, ...)."""
