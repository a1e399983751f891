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


# Cross-references through re-exports: the docstrings and pages may name an
# object where a package re-exports it (``pyprobvae.models.VAE``), while the
# API reference documents it once, in its defining module
# (``pyprobvae.models.vae.VAE``). Resolve such a reference to the defining
# module's entry.
def _defining_target(target):
    import importlib

    parts = target.split(".")
    for end in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:end]))
        except Exception:  # not a module (or one that does not import): try a shorter prefix
            continue
        head = getattr(owner, parts[end], None)
        if head is None:
            return None, None
        module = getattr(head, "__module__", None)
        qualname = getattr(head, "__qualname__", None)
        if module and qualname and module.startswith("pyprobvae"):
            return ".".join([module, qualname] + parts[end + 1:]), None
        return None, head  # a constant: no __module__, found by identity below
    return None, None


def _resolve_reexport(app, env, node, contnode):
    import importlib

    target = node.get("reftarget", "")
    if node.get("refdomain") != "py":
        return None
    if not target.startswith("pyprobvae."):
        # a short name in a docstring, relative to its module: pyprobvae.data's ``Dataset``
        module = node.get("py:module") or ""
        if not module.startswith("pyprobvae") or target.startswith((".", "~")):
            return None
        target = f"{module}.{target}"
    domain = env.get_domain("py")
    new_target, constant = _defining_target(target)
    if constant is not None:
        name = target.rsplit(".", 1)[-1]
        for full, entry in domain.objects.items():
            if entry.objtype == "data" and full.rsplit(".", 1)[-1] == name:
                try:
                    if getattr(importlib.import_module(full.rsplit(".", 1)[0]), name) is constant:
                        new_target = full
                        break
                except (ImportError, AttributeError):
                    continue
    if new_target is None or new_target == node["reftarget"]:
        return None
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], new_target, node, contnode)


def setup(app):
    app.connect("missing-reference", _resolve_reexport)
