"""The Ray edge: the only package that imports `ray` (see DESIGN.md, layers)."""
