"""raycl: Ray-distributed hyperparameter search for continual-learning replay methods."""

__version__ = "0.1.0"
