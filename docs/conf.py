"""Sphinx configuration for the dpt documentation (built with ``tox -e docs``, warnings are errors)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "dpt — data-product-tracker"
author = "the dpt developers"
# Alabaster's footer reads "©{copyright}."; without it the footer is a bare "©." and
# names no project.
copyright = f" {project}, by its developers"  # noqa: A001 - the name Sphinx reads
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_enable_extensions = ["colon_fence"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
autodoc_typehints = "description"
autodoc_mock_imports = ["airflow", "prefect", "dagster"]
nitpicky = False
suppress_warnings = ["myst.header"]
