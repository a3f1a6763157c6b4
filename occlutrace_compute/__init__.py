"""OccluTrace Compute: rigid alignment and analysis of de-identified dental surface meshes."""

__version__ = "0.1.0"
