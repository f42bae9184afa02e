"""The package version, in a module of its own so that any layer can read it.

``bigdens/__init__.py`` loads the engine on first use of ``bigdens.predict``;
a module importing ``__version__`` from the package root would depend on that
facade, and so on the engine, for a string.
"""

__version__ = "0.1.0"
