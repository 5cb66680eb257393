"""The toolkit's version, in the core so that every layer can name it without importing the package root."""

__version__ = "0.1.0"
