"""Sphinx configuration for the pyprobvae documentation."""

import os
import sys

# The package is normally installed in editable mode; this makes a plain
# checkout work too.
sys.path.insert(0, os.path.abspath(".."))

import pyprobvae  # noqa: E402

project = "pyprobvae"
author = "pyprobvae developers"
copyright = "pyprobvae developers, MIT License"
version = pyprobvae.__version__
release = pyprobvae.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build"]

# autodoc
autodoc_member_order = "bysource"
# Show the package's own docstrings only: without this, undocumented
# overrides such as ``forward`` would repeat torch's docstrings.
autodoc_inherit_docstrings = False
autodoc_preserve_defaults = True

nitpicky = False

# HTML: the default theme, no network access needed at build time.
html_theme = "alabaster"
html_theme_options = {
    "description": "Variational autoencoders as Pyro model/guide pairs",
    "fixed_sidebar": True,
}
html_static_path = []
