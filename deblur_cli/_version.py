"""The package's version, in a module of its own so that any module can import it without
importing the package ``__init__`` (which lazily exports the engine)."""

__version__ = "0.2.0"
