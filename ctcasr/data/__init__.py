"""Data pipeline: manifest -> audio -> fbank -> batches (small pure steps, one per module)."""
