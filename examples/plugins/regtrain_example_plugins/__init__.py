"""An example regtrain model plugin (examples/plugins/README.md)."""
