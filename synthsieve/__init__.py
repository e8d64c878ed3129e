"""synthsieve: find AI-generated images in large corpora with Apache Beam."""

__version__ = "0.1.0"
