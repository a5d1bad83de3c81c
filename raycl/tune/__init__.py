"""Search: the Tune trainable, search spaces, the Tuner and export."""
