"""Populations: P members of one method trained in lockstep, parameters stacked on a leading
member dimension. See ``raycl.train`` for the loop and ``raycl.methods.base`` for the method
interface; this package holds the stacked building blocks."""
