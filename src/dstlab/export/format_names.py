"""The export formats' names, apart from their code: the command line and the package root list
them without importing torch."""

FORMATS = ("dense", "csr", "condensed", "semi_structured")
