"""Everything that brings images in: catalog table, demo catalog, safe downloads, pages."""
