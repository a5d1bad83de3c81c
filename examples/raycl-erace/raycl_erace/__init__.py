"""ER-ACE for raycl: ``pip install examples/raycl-erace``, then ``launch/tune.py --method erace``."""
