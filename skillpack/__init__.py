"""skillpack: the image-classification skill pack as one reproducible pipeline. Importing it sets
nothing; entry points call skillpack.runtime.configure() before torch, MLflow or Prefect load."""

__version__ = "0.1.0"
